/**
 * `tokenizer.json` normalizers: Unicode normal forms (GPT-NeoX and Qwen2 use NFC), `Prepend` and
 * `Replace` (Llama 2's SentencePiece-style `▁` handling), `Lowercase`, `Strip` and `Sequence`.
 * A normalizer runs on each stretch of text between added tokens, as in HF tokenizers.
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import { component, MAX_NESTING, patternOf, unsupported } from "./component.ts";
import { compilePattern } from "./pattern.ts";

/** Text -> normalized text. */
export type Normalizer = (text: string) => string;

const KNOWN = [
  "NFC",
  "NFD",
  "NFKC",
  "NFKD",
  "Lowercase",
  "Prepend",
  "Replace",
  "Strip",
  "Sequence",
];

/**
 * The normalizer a `tokenizer.json` `normalizer` object describes (null: none).
 *
 * @example
 * ```ts
 * import { buildNormalizer } from "./normalizers.ts";
 * const n = buildNormalizer({ type: "Sequence", normalizers: [
 *   { type: "Prepend", prepend: "▁" },
 *   { type: "Replace", pattern: { String: " " }, content: "▁" },
 * ] });
 * n?.("Hello world"); // "▁Hello▁world"
 * ```
 */
export function buildNormalizer(value: unknown, depth = 0): Normalizer | undefined {
  if (value === null || value === undefined) return undefined;
  if (depth > MAX_NESTING) {
    throw new ConfigError(`tokenizer.json nests normalizer Sequences over ${MAX_NESTING} deep`);
  }
  const c = component(value, "normalizer");
  switch (c.type) {
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD": {
      const form = c.type;
      return (s) => s.normalize(form);
    }
    case "Lowercase":
      return (s) => s.toLowerCase();
    case "Prepend": {
      const prefix = String(c.prepend ?? "");
      return (s) => (s === "" ? s : prefix + s);
    }
    case "Replace": {
      const p = patternOf(c.pattern, "Replace normalizer");
      const content = String(c.content ?? "");
      if (p.kind === "string") return (s) => s.replaceAll(p.source, content);
      const re = compilePattern(p.source);
      return (s) => {
        let out = "";
        let last = 0;
        for (const [start, end] of re.ranges(s)) {
          out += s.slice(last, start) + content;
          last = end;
        }
        return out + s.slice(last);
      };
    }
    case "Strip": {
      const left = c.strip_left !== false;
      const right = c.strip_right !== false;
      return (s) => (left && right ? s.trim() : left ? s.trimStart() : right ? s.trimEnd() : s);
    }
    case "Sequence": {
      const steps = (Array.isArray(c.normalizers) ? c.normalizers : [])
        .map((n) => buildNormalizer(n, depth + 1))
        .filter((n): n is Normalizer => n !== undefined);
      return (s) => steps.reduce((acc, step) => step(acc), s);
    }
    default:
      throw unsupported("normalizer", c.type, KNOWN);
  }
}
