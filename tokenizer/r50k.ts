/**
 * GPT-2's own tokenizer, r50k_base (50257 ids, `<|endoftext|>` = 50256), from the npm package
 * `js-tiktoken`, which ships the vocabulary: nothing is downloaded at run time. The package is
 * loaded on first use only, so models that never need text (induction-toy) never load it.
 * @module
 */
import { InputError } from "../core/errors.ts";
import { GPT2_PATTERN } from "./byte_level.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** The id of `<|endoftext|>`, GPT-2's BOS, EOS and padding token. */
export const R50K_END_OF_TEXT = 50256;
/** Number of ids in r50k_base. */
export const R50K_VOCAB_SIZE = 50257;

interface Encoder {
  encode(text: string, allowedSpecial?: string[] | "all"): number[];
  decode(ids: number[]): string;
}

class R50kTokenizer implements Tokenizer {
  readonly vocabSize = R50K_VOCAB_SIZE;
  #enc: Encoder;
  constructor(enc: Encoder) {
    this.#enc = enc;
  }
  encode(text: string): number[] {
    // "all": `<|endoftext|>` in the text encodes to 50256, as HF's GPT-2 tokenizer does.
    return this.#enc.encode(text, "all");
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
 * GPT-2's tokenizer (r50k_base). The first call loads the vocabulary (about 0.5 MB of
 * JavaScript); later calls return the same instance.
 *
 * @example
 * ```ts
 * import { r50kTokenizer } from "./r50k.ts";
 * const tok = await r50kTokenizer();
 * tok.encode("Hello world"); // [15496, 995]
 * tok.tokenStrings([15496, 995]); // ["Hello", " world"]
 * ```
 */
export function r50kTokenizer(): Promise<Tokenizer> {
  loading ??= (async () => {
    const [{ Tiktoken }, ranks] = await Promise.all([
      import(TIKTOKEN_LITE),
      import(TIKTOKEN_R50K),
    ]);
    // The package's pattern uses JavaScript's `\s`; GPT-2's means Unicode White_Space.
    return new R50kTokenizer(new Tiktoken({ ...ranks.default, pat_str: GPT2_PATTERN }));
  })();
  return loading;
}
