/**
 * `tokenizer.json` decoders, which turn token strings back into text: `ByteLevel` (the byte
 * alphabet of GPT-2-style vocabularies), `Metaspace`, and the SentencePiece chain Llama 2 uses
 * (`Replace` "▁" -> " ", `ByteFallback` for `<0xXX>` tokens, `Fuse`, `Strip`), as HF applies
 * them: each step maps the list of token strings to a new list, and the result is joined.
 * @module
 */
import { fromByteLevel } from "./byte_level.ts";
import { ConfigError } from "../core/errors.ts";
import { component, MAX_NESTING, patternOf, unsupported } from "./component.ts";

/** Token strings -> decoded strings (joined by the caller). */
export type Decoder = (tokens: string[]) => string[];

// ignoreBOM: a leading U+FEFF is text the tokens spell (decode(encode("\uFEFFab")) keeps it).
const utf8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();
const BYTE_TOKEN = /^<0x([0-9A-F]{2})>$/;
const KNOWN = ["ByteLevel", "Metaspace", "Replace", "ByteFallback", "Fuse", "Strip", "Sequence"];

/**
 * The decoder a `tokenizer.json` `decoder` object describes; without one, HF joins the token
 * strings with spaces.
 *
 * @example
 * ```ts
 * import { buildDecoder } from "./decoders.ts";
 * const decode = buildDecoder({ type: "ByteLevel" });
 * decode(["Hello", "Ġworld"]).join(""); // "Hello world"
 * ```
 */
export function buildDecoder(value: unknown, depth = 0): Decoder {
  if (value === null || value === undefined) return (tokens) => [tokens.join(" ")];
  if (depth > MAX_NESTING) {
    throw new ConfigError(`tokenizer.json nests decoder Sequences over ${MAX_NESTING} deep`);
  }
  const c = component(value, "decoder");
  switch (c.type) {
    case "ByteLevel":
      // All bytes are joined before UTF-8 decoding, so a character split over tokens survives.
      return (tokens) => {
        const parts = tokens.map((t) => fromByteLevel(t) ?? encoder.encode(t));
        const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        let at = 0;
        for (const p of parts) {
          all.set(p, at);
          at += p.length;
        }
        return [utf8.decode(all)];
      };
    case "Metaspace": {
      const replacement = typeof c.replacement === "string" ? c.replacement : "\u2581";
      const scheme = typeof c.prepend_scheme === "string"
        ? c.prepend_scheme
        : c.add_prefix_space === false
        ? "never"
        : "always";
      return (tokens) =>
        tokens.map((t, i) => {
          const s = t.replaceAll(replacement, " ");
          return i === 0 && scheme !== "never" && s.startsWith(" ") ? s.slice(1) : s;
        });
    }
    case "Replace": {
      const p = patternOf(c.pattern, "Replace decoder");
      if (p.kind !== "string") throw unsupported("decoder", "Replace with a regex", KNOWN);
      const content = String(c.content ?? "");
      return (tokens) => tokens.map((t) => t.replaceAll(p.source, content));
    }
    case "ByteFallback":
      // Runs of <0xXX> tokens become their bytes; invalid UTF-8 becomes one U+FFFD per byte.
      return (tokens) => {
        const out: string[] = [];
        let bytes: number[] = [];
        const flush = () => {
          if (bytes.length === 0) return;
          try {
            out.push(strictUtf8.decode(new Uint8Array(bytes)));
          } catch {
            for (let i = 0; i < bytes.length; i++) out.push("\ufffd");
          }
          bytes = [];
        };
        for (const t of tokens) {
          const m = BYTE_TOKEN.exec(t);
          if (m) bytes.push(parseInt(m[1], 16));
          else {
            flush();
            out.push(t);
          }
        }
        flush();
        return out;
      };
    case "Fuse":
      return (tokens) => [tokens.join("")];
    case "Strip": {
      const content = String(c.content ?? " ");
      const start = Number(c.start ?? 0);
      const stop = Number(c.stop ?? 0);
      return (tokens) =>
        tokens.map((t) => {
          const chars = [...t];
          let a = 0;
          while (a < start && chars[a] === content) a++;
          let b = chars.length;
          while (chars.length - b < stop && b > a && chars[b - 1] === content) b--;
          return chars.slice(a, b).join("");
        });
    }
    case "Sequence": {
      const steps = (Array.isArray(c.decoders) ? c.decoders : []).map((d) =>
        buildDecoder(d, depth + 1)
      );
      return (tokens) => steps.reduce((acc, step) => step(acc), tokens);
    }
    default:
      throw unsupported("decoder", c.type, KNOWN);
  }
}
