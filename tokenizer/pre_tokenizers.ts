/**
 * `tokenizer.json` pre-tokenizers, which cut normalized text into the words BPE works on one at a
 * time: `ByteLevel` (GPT-2, GPT-NeoX, and after a `Split` in Llama 3 and Qwen2), `Split` with a
 * regex or string and any of HF's five delimiter behaviours, `Metaspace` (SentencePiece-style
 * `▁` words), `Digits` and `Sequence`.
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import { toByteLevel } from "./byte_level.ts";
import { component, MAX_NESTING, patternOf, unsupported } from "./component.ts";
import { compilePattern, gpt2Words, type PatternMatcher } from "./pattern.ts";

/**
 * Words -> finer words. `atStart` says whether `words[0]` begins the whole input (what
 * Metaspace's "first" prefix depends on); words are plain strings, as long texts have many.
 */
export type PreTokenizer = (words: string[], atStart: boolean) => string[];

type Behavior = "Isolated" | "Removed" | "MergedWithPrevious" | "MergedWithNext" | "Contiguous";
const BEHAVIORS = ["Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"];

/**
 * Splits `text` around the matches of `re` (a global RegExp, or a tokenizer pattern's
 * {@link PatternMatcher}) with one of HF's delimiter behaviours; `invert` swaps the roles of
 * matches and the text between them. Empty pieces are dropped.
 *
 * @example
 * ```ts
 * import { splitText } from "./pre_tokenizers.ts";
 * splitText("a-b", /-/gu, "MergedWithNext"); // ["a", "-b"]
 * ```
 */
export function splitText(
  text: string,
  re: RegExp | PatternMatcher,
  behavior: Behavior,
  invert = false,
): string[] {
  const parts: Array<{ text: string; match: boolean }> = [];
  let last = 0;
  const ranges = re instanceof RegExp
    ? Array.from(text.matchAll(re), (m): [number, number] => [m.index, m.index + m[0].length])
    : re.ranges(text);
  for (const [start, end] of ranges) {
    if (end === start) continue;
    if (start > last) parts.push({ text: text.slice(last, start), match: invert });
    parts.push({ text: text.slice(start, end), match: !invert });
    last = end;
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

/** The [start, end) runs of `\p{N}` code points (one each when `single`), without a RegExp. */
function digitRuns(single: boolean): PatternMatcher {
  const isN = /^\p{N}$/u;
  return {
    source: single ? "\\p{N}" : "\\p{N}+",
    *ranges(text: string) {
      let start = -1;
      for (let i = 0; i < text.length;) {
        const cp = text.codePointAt(i)!;
        const w = cp > 0xffff ? 2 : 1;
        if (isN.test(String.fromCodePoint(cp))) {
          if (single) yield [i, i + w] as [number, number];
          else if (start < 0) start = i;
        } else if (start >= 0) {
          yield [start, i] as [number, number];
          start = -1;
        }
        i += w;
      }
      if (start >= 0) yield [start, text.length] as [number, number];
    },
  };
}

/** The occurrences of a literal string, left to right, without a RegExp. */
function literal(needle: string): PatternMatcher {
  return {
    source: needle,
    *ranges(text: string) {
      if (needle === "") return;
      for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + needle.length)) {
        yield [i, i + needle.length] as [number, number];
      }
    },
  };
}

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
export function buildPreTokenizer(value: unknown, depth = 0): PreTokenizer | undefined {
  if (value === null || value === undefined) return undefined;
  if (depth > MAX_NESTING) {
    throw new ConfigError(`tokenizer.json nests pre-tokenizer Sequences over ${MAX_NESTING} deep`);
  }
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
          for (const w of useRegex ? gpt2Words(t) : [t]) {
            if (w !== "") out.push(spell(w));
          }
        }
        return out;
      };
    }
    case "Split": {
      const p = patternOf(c.pattern, "Split pre-tokenizer");
      const re = p.kind === "regex" ? compilePattern(p.source) : literal(p.source);
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
      const delimiter = literal(replacement);
      return eachWord((text, atStart) => {
        let t = text.replaceAll(" ", replacement);
        const prepend = scheme === "always" || (scheme === "first" && atStart);
        if (prepend && !t.startsWith(replacement)) t = replacement + t;
        return split ? splitText(t, delimiter, "MergedWithNext") : [t];
      });
    }
    case "Digits": {
      const re = digitRuns(c.individual_digits === true);
      return eachWord((text) => splitText(text, re, "Isolated"));
    }
    case "Sequence": {
      const steps = (Array.isArray(c.pretokenizers) ? c.pretokenizers : [])
        .map((p) => buildPreTokenizer(p, depth + 1))
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
