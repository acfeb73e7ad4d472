/**
 * How a `tokenizer.json` regex (a Split pre-tokenizer's or a Replace normalizer's) is matched, in
 * time linear in the text whatever the pattern, because the pattern comes from a stranger's file
 * and JavaScript's backtracking RegExp can take exponential time (`(a+)+$`) or overflow its stack
 * (`\p{L}+` over a 6M-character word):
 *
 * - the patterns real tokenizers use (GPT-2's, which GPT-NeoX and many fine-tunes share, and the
 *   Llama 3 / Qwen2 family's, with digit groups of 3 or 1) run on hand-written scanners that
 *   take the same decisions as the backtracking regex (leftmost, first alternative that matches,
 *   greedy), one pass over the text; `tests/tokenizer_reliability_test.ts` compares them with
 *   the RegExp on thousands of random strings;
 * - any other pattern runs on RE2JS (`npm:re2js`, a maintained pure-JavaScript port of Google's
 *   RE2: an automaton, linear time by construction, usable in Deno and browsers), loaded on
 *   demand by {@link loadPatternEngine} so programs that never meet such a pattern (the browser
 *   bundle, URL importers) never download it. RE2 has no lookaround, so an unknown pattern with
 *   `(?=`, `(?!`, `(?<=` or `(?<!` is a ConfigError: its worst case could not be bounded.
 *
 * Why not RE2JS for every pattern: every real tokenizer pattern ends in `\s+(?!\S)`, a lookahead
 * RE2 refuses; and a static import would make every program fetch it (0.7 MB) for nothing. Why not
 * `re2-wasm` or the `re2` bindings: native or wasm builds that the browser example and URL imports
 * cannot load the same way.
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import { onigToJs } from "./regex.ts";

/** A compiled pattern: the [start, end) UTF-16 ranges of its successive non-overlapping matches. */
export interface PatternMatcher {
  /** The pattern as `tokenizer.json` wrote it. */
  readonly source: string;
  /** Every match, left to right, as JavaScript's `matchAll` with flags `gu` would find them. */
  ranges(text: string): Iterable<[number, number]>;
}

// ---- Character classes, cached for the BMP (one byte per code point, filled on demand) ----

const L = 1, N = 2, WS = 3, OTHER = 4;
const BMP = new Uint8Array(0x10000);
const IS_L = /^\p{L}$/u, IS_N = /^\p{N}$/u, IS_WS = /^\p{White_Space}$/u;

function classify(cp: number): number {
  const ch = String.fromCodePoint(cp);
  return IS_L.test(ch) ? L : IS_N.test(ch) ? N : IS_WS.test(ch) ? WS : OTHER;
}

function classOf(cp: number): number {
  if (cp < 0x10000) {
    const c = BMP[cp];
    return c !== 0 ? c : (BMP[cp] = classify(cp));
  }
  return classify(cp);
}

/** The code point at `i` and its length in UTF-16 units (a lone surrogate is one unit). */
function cpAt(s: string, i: number): number {
  return s.codePointAt(i)!;
}
function width(cp: number): number {
  return cp > 0xffff ? 2 : 1;
}

/** End of the run of code points of class `cls` starting at `i`. */
function runOf(s: string, i: number, cls: number): number {
  while (i < s.length) {
    const cp = cpAt(s, i);
    if (classOf(cp) !== cls) break;
    i += width(cp);
  }
  return i;
}

const QUOTE = 0x27, SPACE = 0x20, CR = 0x0d, LF = 0x0a;

/**
 * `\s+(?!\S)|\s+` at a whitespace position i whose run ends at j: the whole run at the end of
 * the text; else, the lookahead failing at j, the run less its last space (every White_Space
 * character is one UTF-16 unit), or the whole run when that would leave nothing.
 */
function whitespaceEnd(s: string, i: number, j: number): number {
  return j === s.length || j - 1 === i ? j : j - 1;
}

/**
 * GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
 * (case-sensitive contractions). The end of the match starting at `i`.
 */
function gpt2At(s: string, i: number): number {
  const cp = cpAt(s, i);
  if (cp === QUOTE && i + 1 < s.length) {
    const a = s[i + 1], b = s[i + 2];
    if (a === "s" || a === "t" || a === "m" || a === "d") return i + 2;
    if ((a === "r" || a === "v") && b === "e") return i + 3;
    if (a === "l" && b === "l") return i + 3;
  }
  const cls = classOf(cp);
  if (cp === SPACE && i + 1 < s.length) {
    const next = classOf(cpAt(s, i + 1));
    if (next !== WS) return runOf(s, i + 1, next);
  }
  if (cls !== WS) return runOf(s, i, cls);
  return whitespaceEnd(s, i, runOf(s, i, WS));
}

/** `(?i:` contractions as the JavaScript translation spells them (`s` also matches `ſ`). */
function caselessContraction(s: string, i: number): number {
  const a = s[i + 1]?.toLowerCase(), b = s[i + 2]?.toLowerCase();
  if (a === "s" || a === "\u017f" || a === "t" || a === "m" || a === "d") return i + 2;
  if ((a === "r" || a === "v") && b === "e") return i + 3;
  if (a === "l" && b === "l") return i + 3;
  return -1;
}

/**
 * Llama 3 (`digits` 3) and Qwen2 (`digits` 1):
 * `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|`
 * `\s*[\r\n]+|\s+(?!\S)|\s+`.
 */
function llama3At(s: string, i: number, digits: number): number {
  const cp = cpAt(s, i);
  if (cp === QUOTE && i + 1 < s.length) {
    const end = caselessContraction(s, i);
    if (end > 0) return end;
  }
  const cls = classOf(cp);
  const w = width(cp);
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (cls === L) return runOf(s, i, L);
  if (cls !== N && cp !== CR && cp !== LF && i + w < s.length && classOf(cpAt(s, i + w)) === L) {
    return runOf(s, i + w, L);
  }
  // \p{N}{1,D}
  if (cls === N) {
    let j = i;
    for (let k = 0; k < digits && j < s.length; k++) {
      const c = cpAt(s, j);
      if (classOf(c) !== N) break;
      j += width(c);
    }
    return j;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  const crlf = (j: number) => {
    while (j < s.length && (s.charCodeAt(j) === CR || s.charCodeAt(j) === LF)) j++;
    return j;
  };
  if (cp === SPACE && i + 1 < s.length && classOf(cpAt(s, i + 1)) === OTHER) {
    return crlf(runOf(s, i + 1, OTHER));
  }
  if (cls === OTHER) return crlf(runOf(s, i, OTHER));
  // Whitespace: \s*[\r\n]+ (up to the last \r or \n of the run), then \s+(?!\S), then \s+.
  const j = runOf(s, i, WS);
  for (let k = j - 1; k >= i; k--) {
    const c = s.charCodeAt(k);
    if (c === CR || c === LF) return k + 1;
  }
  return whitespaceEnd(s, i, j);
}

/** A matcher that walks the text with `at(s, i)` (the end of the match at i, every i matches). */
function scanner(source: string, at: (s: string, i: number) => number): PatternMatcher {
  return {
    source,
    *ranges(text: string) {
      for (let i = 0; i < text.length;) {
        const end = at(text, i);
        yield [i, end];
        i = end;
      }
    },
  };
}

/** GPT-2's pattern as tokenizer.json files write it (Oniguruma syntax). */
export const GPT2_ONIG =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

const llama3Onig = (digits: string) =>
  `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}${digits}| ?[^\\s\\p{L}\\p{N}]+` +
  `[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;

/** The known patterns, in Oniguruma syntax, and their scanners. */
const KNOWN: ReadonlyMap<string, (s: string, i: number) => number> = new Map([
  [GPT2_ONIG, gpt2At],
  [llama3Onig("{1,3}"), (s: string, i: number) => llama3At(s, i, 3)],
  [llama3Onig(""), (s: string, i: number) => llama3At(s, i, 1)],
]);

/**
 * The scanner of GPT-2's pattern, as the ByteLevel pre-tokenizer uses it.
 *
 * @example
 * ```ts
 * import { gpt2Words } from "./pattern.ts";
 * gpt2Words("I'm here!"); // ["I", "'m", " here", "!"]
 * ```
 */
export function gpt2Words(text: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length;) {
    const end = gpt2At(text, i);
    out.push(text.slice(i, end));
    i = end;
  }
  return out;
}

// ---- The linear-time engine for other patterns ----

interface Re2Matcher {
  find(): boolean;
  start(): number;
  end(): number;
}
interface Re2Module {
  RE2JS: { compile(pattern: string): { matcher(input: string): Re2Matcher } };
}

// Held in a constant, not written inside import(), so that Deno and bundlers do not add it to the
// graph of every program that imports mod.ts (see r50k.ts).
const RE2JS_SPECIFIER = "npm:re2js@2.10.0";
let engine: Re2Module | undefined;
let loading: Promise<boolean> | undefined;

/**
 * Loads the linear-time engine (RE2JS) for tokenizer patterns that are not one of the known ones;
 * resolves false where it cannot be loaded (no network, a browser without an import map), in
 * which case such patterns stay ConfigErrors. Loading a model does this by itself when its
 * `tokenizer.json` needs it.
 *
 * @example
 * ```ts ignore
 * import { loadPatternEngine } from "./pattern.ts";
 * await loadPatternEngine(); // true
 * ```
 */
export function loadPatternEngine(): Promise<boolean> {
  loading ??= import(RE2JS_SPECIFIER).then(
    (m) => {
      engine = m as Re2Module;
      return true;
    },
    () => false,
  );
  return loading;
}

const LOOKAROUND = /\(\?<?[=!]/;

/**
 * Whether the pattern needs the engine of {@link loadPatternEngine} (it is not a known one).
 *
 * @example
 * ```ts
 * import { GPT2_ONIG, needsPatternEngine } from "./pattern.ts";
 * needsPatternEngine(GPT2_ONIG); // false
 * needsPatternEngine("\\p{N}{1,3}"); // true
 * ```
 */
export function needsPatternEngine(source: string): boolean {
  return !KNOWN.has(source);
}

/**
 * The matcher of a `tokenizer.json` pattern (Oniguruma syntax): a scanner for the known patterns,
 * RE2JS for the others; ConfigError for a construct that cannot be translated exactly, for an
 * unknown pattern with lookaround, or when RE2JS is needed but was not loaded.
 *
 * @example
 * ```ts
 * import { compilePattern, GPT2_ONIG } from "./pattern.ts";
 * [...compilePattern(GPT2_ONIG).ranges("Hi there")]; // [[0, 2], [2, 8]]
 * ```
 */
export function compilePattern(source: string): PatternMatcher {
  const known = KNOWN.get(source);
  if (known) return scanner(source, known);
  const re2Source = onigToJs(source, "re2"); // ConfigError for what cannot be translated
  if (LOOKAROUND.test(source)) {
    throw new ConfigError(
      `tokenizer.json pattern ${JSON.stringify(source)} uses lookaround and is not one of the ` +
        `patterns this library has linear-time scanners for (GPT-2's, Llama 3's, Qwen2's): a ` +
        `backtracking match of it could take unbounded time, so it is refused`,
    );
  }
  if (!engine) {
    throw new ConfigError(
      `tokenizer.json pattern ${JSON.stringify(source)} needs the linear-time regex engine ` +
        `(${RE2JS_SPECIFIER}), which is not loaded: await loadPatternEngine() first ` +
        `(fromPretrained does), or check that npm packages can be imported here`,
    );
  }
  let compiled: { matcher(input: string): Re2Matcher };
  try {
    compiled = engine.RE2JS.compile(re2Source);
  } catch (e) {
    throw new ConfigError(
      `tokenizer.json pattern ${JSON.stringify(source)} is not accepted by the linear-time ` +
        `engine: ${(e as Error).message}`,
    );
  }
  return {
    source,
    *ranges(text: string) {
      const m = compiled.matcher(text);
      let lastEmpty = -1;
      while (m.find()) {
        const start = m.start(), end = m.end();
        if (start === end) {
          if (start === lastEmpty) break; // never loop on an empty match
          lastEmpty = start;
        }
        yield [start, end] as [number, number];
      }
    },
  };
}
