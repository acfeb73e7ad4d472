/**
 * GPT-2's own tokenizer, r50k_base (50257 ids, `<|endoftext|>` = 50256), from the npm package
 * `js-tiktoken`, which ships the vocabulary: nothing is downloaded at run time. The package is
 * loaded on first use only, so models that never need text (induction-toy) never load it.
 * @module
 */
import { InputError } from "../core/errors.ts";
import { GPT2_PATTERN } from "./byte_level.ts";
import { gpt2Words } from "./pattern.ts";
import { heapPop, heapPush } from "./min_heap.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** The id of `<|endoftext|>`, GPT-2's BOS, EOS and padding token. */
export const R50K_END_OF_TEXT = 50256;
/** Number of ids in r50k_base. */
export const R50K_VOCAB_SIZE = 50257;

interface Encoder {
  /** js-tiktoken's rank of each token, keyed by its UTF-8 bytes joined with ",". */
  rankMap: Map<string, number>;
  decode(ids: number[]): string;
}

const END_OF_TEXT = "<|endoftext|>";
const utf8 = new TextEncoder();

class R50kTokenizer implements Tokenizer {
  readonly vocabSize = R50K_VOCAB_SIZE;
  #enc: Encoder;
  constructor(enc: Encoder) {
    this.#enc = enc;
  }
  /**
   * js-tiktoken's `encode` with its ranks, but with the linear GPT-2 scanner for words and a heap
   * for merges: its own merge rescans the word after every merge (1000 CJK characters took 17 s,
   * and its RegExp overflows the stack near 6M), where this is O(n log n) in a word's bytes.
   */
  encode(text: string): number[] {
    const ids: number[] = [];
    // `<|endoftext|>` in the text encodes to 50256, as HF's GPT-2 tokenizer does.
    text.split(END_OF_TEXT).forEach((segment, i) => {
      if (i > 0) ids.push(R50K_END_OF_TEXT);
      for (const word of gpt2Words(segment)) this.#word(utf8.encode(word), ids);
    });
    return ids;
  }
  /** Byte-pair merges of one word, lowest rank first, leftmost among equal ranks. */
  #word(bytes: Uint8Array, ids: number[]): void {
    const ranks = this.#enc.rankMap;
    const key = (from: number, to: number) => bytes.subarray(from, to).join(",");
    const whole = ranks.get(key(0, bytes.length));
    if (whole !== undefined) {
      ids.push(whole);
      return;
    }
    const n = bytes.length;
    const end = Int32Array.from({ length: n }, (_, i) => i + 1); // part starting at i: [i, end[i])
    const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
    const alive = new Uint8Array(n).fill(1);
    const heap: number[] = [];
    const rankAt = (i: number) => (end[i] < n ? ranks.get(key(i, end[end[i]])) : undefined);
    const push = (i: number) => {
      const r = rankAt(i);
      if (r !== undefined) heapPush(heap, r * 2 ** 32 + i);
    };
    for (let i = 0; i < n - 1; i++) push(i);
    while (heap.length > 0) {
      const top = heapPop(heap);
      const rank = Math.floor(top / 2 ** 32);
      const i = top - rank * 2 ** 32;
      if (!alive[i] || rankAt(i) !== rank) continue; // stale
      const j = end[i];
      alive[j] = 0;
      end[i] = end[j];
      if (end[i] < n) prev[end[i]] = i;
      if (prev[i] >= 0) push(prev[i]);
      push(i);
    }
    for (let i = 0; i < n; i = end[i]) {
      const id = ranks.get(key(i, end[i]));
      if (id !== undefined) ids.push(id);
    }
  }
  decode(ids: number[]): string {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= R50K_VOCAB_SIZE) {
        throw new InputError(
          `token id ${id} is not in GPT-2's vocabulary (0..${R50K_VOCAB_SIZE - 1})`,
        );
      }
    }
    return this.#enc.decode(ids);
  }
  tokenStrings(ids: number[]): string[] {
    return ids.map((id) => this.decode([id]));
  }
}

let loading: Promise<Tokenizer> | undefined;

// Full npm: specifiers, not the bare "js-tiktoken" of deno.json's import map: a program that
// imports this library by URL does not get our import map. tests/tokenizer_test.ts checks that
// this version is the one pinned in deno.json. They are held in constants, not written inside
// import(), so that Deno and bundlers do not see them when they build the module graph: a literal
// import("npm:...") is fetched from the registry (Deno) or inlined (deno bundle, +0.6 MB) for
// every program that imports mod.ts, even one that never tokenizes text (induction-toy, a browser).
const TIKTOKEN_LITE = "npm:js-tiktoken@1.0.21/lite";
const TIKTOKEN_R50K = "npm:js-tiktoken@1.0.21/ranks/r50k_base";

/**
 * js-tiktoken's modules that {@linkcode r50kTokenizer} needs, already loaded: for a bundle that
 * cannot import `npm:` specifiers at run time (a browser worker) and imports them itself.
 */
export interface R50kModules {
  /** The module `js-tiktoken/lite` (its `Tiktoken` class is used). */
  lite: unknown;
  /** The module `js-tiktoken/ranks/r50k_base` (its default export, the ranks, is used). */
  ranks: unknown;
}

/**
 * GPT-2's tokenizer (r50k_base). The first call loads the vocabulary (about 0.5 MB of
 * JavaScript) from npm, or takes it from `modules` when given (a browser bundle passes the
 * modules it imported; `examples/explorer/r50k_modules.ts`); later calls return the same instance.
 *
 * @example
 * ```ts
 * import { r50kTokenizer } from "./r50k.ts";
 * const tok = await r50kTokenizer();
 * tok.encode("Hello world"); // [15496, 995]
 * tok.tokenStrings([15496, 995]); // ["Hello", " world"]
 * ```
 */
export function r50kTokenizer(modules?: R50kModules): Promise<Tokenizer> {
  loading ??= (async () => {
    // deno-lint-ignore no-explicit-any
    const [{ Tiktoken }, ranks]: any[] = modules
      ? [modules.lite, modules.ranks]
      : await Promise.all([
        import(TIKTOKEN_LITE),
        import(TIKTOKEN_R50K),
      ]);
    // The package's pattern uses JavaScript's `\s`; GPT-2's means Unicode White_Space.
    return new R50kTokenizer(new Tiktoken({ ...ranks.default, pat_str: GPT2_PATTERN }));
  })();
  return loading;
}
