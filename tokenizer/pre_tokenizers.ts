/**
 * `tokenizer.json` pre-tokenizers, which cut normalized text into the words BPE works on one at a
 * time: `ByteLevel` (GPT-2, GPT-NeoX, and after a `Split` in Llama 3 and Qwen2), `Split` with a
 * regex or string and any of HF's five delimiter behaviours, `Metaspace` (SentencePiece-style
 * `▁` words), `Digits` and `Sequence`.
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import { GPT2_PATTERN, toByteLevel } from "./byte_level.ts";
import { component, patternOf, unsupported } from "./component.ts";
import { onigRegExp } from "./regex.ts";

/**
 * Words -> finer words. `atStart` says whether `words[0]` begins the whole input (what
 * Metaspace's "first" prefix depends on); words are plain strings, as long texts have many.
 */
export type PreTokenizer = (words: string[], atStart: boolean) => string[];

type Behavior = "Isolated" | "Removed" | "MergedWithPrevious" | "MergedWithNext" | "Contiguous";
const BEHAVIORS = ["Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"];

/**
 * Splits `text` around the matches of `re` (a global RegExp) with one of HF's delimiter
 * behaviours; `invert` swaps the roles of matches and the text between them. Empty pieces are
 * dropped.
 *
 * @example
 * ```ts
 * import { splitText } from "./pre_tokenizers.ts";
 * splitText("a-b", /-/gu, "MergedWithNext"); // ["a", "-b"]
 * ```
 */
export function splitText(text: string, re: RegExp, behavior: Behavior, invert = false): string[] {
  const parts: Array<{ text: string; match: boolean }> = [];
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m[0] === "") continue;
    if (m.index > last) parts.push({ text: text.slice(last, m.index), match: invert });
    parts.push({ text: m[0], match: !invert });
    last = m.index + m[0].length;
  }
  if (last < text.length) parts.push({ text: text.slice(last), match: invert });
  const out: string[] = [];
  let pendingNext = "";
  let previousWasMatch = false;
  for (const [i, { text: t, match }] of parts.entries()) {
    switch (behavior) {
      case "Isolated":
        out.push(t);
        break;
      case "Removed":
        if (!match) out.push(t);
        break;
      case "MergedWithPrevious":
        if (match && out.length > 0 && !previousWasMatch) out[out.length - 1] += t;
        else out.push(t);
        break;
      case "MergedWithNext":
        // As HF does it: a delimiter joins the text after it, unless another delimiter follows.
        if (match && i + 1 < parts.length && !parts[i + 1].match) pendingNext = t;
        else {
          out.push(pendingNext + t);
          pendingNext = "";
        }
        break;
      case "Contiguous":
        if (match && previousWasMatch) out[out.length - 1] += t;
        else out.push(t);
        break;
    }
    previousWasMatch = match;
  }
  return out;
}

/** Applies a text splitter to each word; only the first word can be at the start. */
function eachWord(split: (text: string, atStart: boolean) => string[]): PreTokenizer {
  return (words, atStart) => {
    const out: string[] = [];
    words.forEach((w, i) => {
      for (const part of split(w, atStart && i === 0)) if (part !== "") out.push(part);
    });
    return out;
  };
}

function escapeRegExp(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/-]/g, "\\$&");
}

const GPT2_REGEX = new RegExp(GPT2_PATTERN, "gu");
const KNOWN = ["ByteLevel", "Split", "Metaspace", "Digits", "Sequence"];

/**
 * The pre-tokenizer a `tokenizer.json` `pre_tokenizer` object describes (null: none).
 *
 * @example
 * ```ts
 * import { buildPreTokenizer } from "./pre_tokenizers.ts";
 * const pre = buildPreTokenizer({ type: "ByteLevel", add_prefix_space: false })!;
 * pre(["Hello world"], true); // ["Hello", "Ġworld"]
 * ```
 */
export function buildPreTokenizer(value: unknown): PreTokenizer | undefined {
  if (value === null || value === undefined) return undefined;
  const c = component(value, "pre_tokenizer");
  switch (c.type) {
    case "ByteLevel": {
      const prefix = c.add_prefix_space === true;
      const useRegex = c.use_regex !== false;
      // Words repeat: remembering their byte-level spelling saves most of the work on long text.
      const spelled = new Map<string, string>();
      const spell = (word: string): string => {
        let s = spelled.get(word);
        if (s === undefined) {
          s = toByteLevel(word);
          if (spelled.size >= 50_000) spelled.clear();
          spelled.set(word, s);
        }
        return s;
      };
      return (words) => {
        const out: string[] = [];
        for (const word of words) {
          const t = prefix && !word.startsWith(" ") ? ` ${word}` : word;
          for (const w of useRegex ? t.match(GPT2_REGEX) ?? [] : [t]) {
            if (w !== "") out.push(spell(w));
          }
        }
        return out;
      };
    }
    case "Split": {
      const p = patternOf(c.pattern, "Split pre-tokenizer");
      const re = p.kind === "regex"
        ? onigRegExp(p.source)
        : new RegExp(escapeRegExp(p.source), "gu");
      const behavior = String(c.behavior);
      if (!BEHAVIORS.includes(behavior)) {
        throw new ConfigError(
          `tokenizer.json Split has unknown behavior ${JSON.stringify(behavior)}`,
        );
      }
      return eachWord((text) => splitText(text, re, behavior as Behavior, c.invert === true));
    }
    case "Metaspace": {
      const replacement = typeof c.replacement === "string" ? c.replacement : "\u2581";
      // Older files say add_prefix_space (true = "always"); newer ones prepend_scheme.
      const scheme = typeof c.prepend_scheme === "string"
        ? c.prepend_scheme
        : c.add_prefix_space === false
        ? "never"
        : "always";
      if (!["always", "first", "never"].includes(scheme)) {
        throw new ConfigError(`tokenizer.json Metaspace has unknown prepend_scheme ${scheme}`);
      }
      const split = c.split !== false;
      const delimiter = new RegExp(escapeRegExp(replacement), "gu");
      return eachWord((text, atStart) => {
        let t = text.replaceAll(" ", replacement);
        const prepend = scheme === "always" || (scheme === "first" && atStart);
        if (prepend && !t.startsWith(replacement)) t = replacement + t;
        return split ? splitText(t, delimiter, "MergedWithNext") : [t];
      });
    }
    case "Digits": {
      const re = c.individual_digits === true ? /\p{N}/gu : /\p{N}+/gu;
      return eachWord((text) => splitText(text, re, "Isolated"));
    }
    case "Sequence": {
      const steps = (Array.isArray(c.pretokenizers) ? c.pretokenizers : []).map(buildPreTokenizer)
        .filter((p): p is PreTokenizer => p !== undefined);
      // A first word that a step removes leaves no word at the start for the next steps.
      return (words, atStart) =>
        steps.reduce((acc, step) => {
          const first = atStart && acc.length > 0 ? acc[0] : undefined;
          const next = step(acc, atStart);
          atStart = first !== undefined && next.length > 0;
          return next;
        }, words);
    }
    default:
      throw unsupported("pre-tokenizer", c.type, KNOWN);
  }
}
