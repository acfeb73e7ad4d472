/**
 * Which tokenizer a model gets, and how it prepends BOS: the one its files describe
 * (`tokenizer.json`, or `vocab.json` + `merges.txt`), else the one its family implies (GPT-2's
 * r50k_base), else none; wrapped with the family's BOS rule as TransformerLens applies it.
 *
 * Why one in-house BPE (`bpe.ts`) rather than `@huggingface/tokenizers` (npm, 0.2.0): measured
 * on 441 + 3000 strings against HF's Rust tokenizers (0.22) for GPT-2, a GPT-NeoX-style file,
 * Llama 3, Qwen, Llama 2 (legacy and Metaspace forms), both match Llama and Qwen exactly, but the
 * npm package's ByteLevel pre-tokenizer uses JavaScript's `\s` and gives other ids than HF for
 * 1.4% of GPT-2 strings (0.9% for GPT-NeoX; U+FEFF, U+180E, U+0085 ...), where this one matches
 * all. It also encodes 4-8x faster (2.4-3.7 MB/s of mixed text against 0.35-0.6, CPU time on
 * the same 1.2 MB), loads Llama 3's 9 MB file in about the same time (0.9 s), and needs no
 * dependency for URL importers or the browser bundle. GPT-2 without tokenizer files keeps
 * r50k_base from js-tiktoken, which gives the same ids.
 * @module
 */
import { ConfigError, InputError } from "../core/errors.ts";
import { type TokenizerFiles, tokenizerFromFiles } from "./bpe.ts";
import type { Tokenizer } from "./tokenizer.ts";

/**
 * A model's tokenizer with TransformerLens's BOS handling (`to_tokens`).
 *
 * @example
 * ```ts ignore
 * const tok = (await resolveModel("pythia-70m")).tokenizer!;
 * tok.toTokens("Hello"); // [12092]: TransformerLens prepends no BOS for GPT-NeoX
 * tok.toTokens("Hello", { prependBos: true }); // [0, 12092]
 * ```
 */
export interface ModelTokenizer extends Tokenizer {
  /** The id TransformerLens prepends (the tokenizer's BOS, else its EOS), if the model has one. */
  readonly bosTokenId: number | undefined;
  /** Whether `toTokens` prepends BOS by default (TransformerLens's `default_prepend_bos`). */
  readonly defaultPrependBos: boolean;
  /** Text -> ids, with BOS first when `prependBos` (default {@link defaultPrependBos}). */
  toTokens(text: string, opts?: { prependBos?: boolean }): number[];
}

/**
 * TransformerLens's `default_prepend_bos` per `model_type` (`convert_hf_model_config`): GPT-NeoX
 * (Pythia, since TransformerLens 3) and Qwen2 do not prepend BOS; GPT-2, Llama and unknown
 * families do.
 */
const DEFAULT_PREPEND_BOS: Readonly<Record<string, boolean>> = {
  gpt2: true,
  gpt_neox: false,
  llama: true,
  qwen2: false,
};

class FamilyTokenizer implements ModelTokenizer {
  readonly vocabSize: number;
  constructor(
    readonly inner: Tokenizer,
    readonly bosTokenId: number | undefined,
    readonly defaultPrependBos: boolean,
  ) {
    this.vocabSize = inner.vocabSize;
  }
  encode(text: string): number[] {
    return this.inner.encode(text);
  }
  decode(ids: number[]): string {
    return this.inner.decode(ids);
  }
  tokenStrings(ids: number[]): string[] {
    return this.inner.tokenStrings(ids);
  }
  toTokens(text: string, opts: { prependBos?: boolean } = {}): number[] {
    // TransformerLens tokenizes with a tokenizer that adds BOS itself (add_bos_token=True), or
    // pastes the BOS text in front; either way the text is encoded as the start of the input,
    // so BOS + encode(text) is the same ids (Metaspace's "first" prefix included).
    const ids = this.inner.encode(text);
    if (!(opts.prependBos ?? this.defaultPrependBos)) return ids;
    if (this.bosTokenId === undefined) {
      throw new InputError(
        "this model has no BOS token (config.json sets neither bos_token_id nor eos_token_id): " +
          "call toTokens with prependBos: false",
      );
    }
    return [this.bosTokenId, ...ids];
  }
}

/**
 * Reads a model's tokenizer files through `read` (which returns undefined for a missing file):
 * `tokenizer.json` when present, else `vocab.json` and `merges.txt`.
 *
 * @example
 * ```ts
 * import { readTokenizerFiles } from "./for_model.ts";
 * const files = await readTokenizerFiles(async () => undefined);
 * files.tokenizerJson; // undefined: the model has no tokenizer files
 * ```
 */
export async function readTokenizerFiles(
  read: (file: string) => Promise<string | undefined>,
): Promise<TokenizerFiles> {
  const tokenizerJson = await read("tokenizer.json");
  if (tokenizerJson !== undefined) return { tokenizerJson };
  const vocabJson = await read("vocab.json");
  const mergesTxt = vocabJson === undefined ? undefined : await read("merges.txt");
  return { vocabJson, mergesTxt };
}

function tokenId(config: Record<string, unknown>, key: string): number | undefined {
  const v = config[key];
  // Some configs list several EOS ids (Llama 3 instruct): the first is the main one.
  const id = Array.isArray(v) ? v[0] : v;
  return Number.isSafeInteger(id) && (id as number) >= 0 ? id as number : undefined;
}

/**
 * The tokenizer of a model with this `config.json`, from its tokenizer files when they exist
 * (checked against `vocab_size`), else r50k_base for GPT-2's vocabulary (loaded lazily, so URL
 * importers that never tokenize never download it), else undefined (token ids only). BOS is
 * `bos_token_id`, else `eos_token_id` (as TransformerLens falls back to the EOS token), and
 * prepended by default as TransformerLens does for the family.
 *
 * @example
 * ```ts
 * import { tokenizerForModel } from "./for_model.ts";
 * const tok = await tokenizerForModel({ model_type: "gpt2", vocab_size: 96 }, {}, "a folder");
 * tok; // undefined: a tiny GPT-2 without tokenizer files takes token ids only
 * ```
 */
export async function tokenizerForModel(
  config: Record<string, unknown>,
  files: TokenizerFiles,
  source: string,
): Promise<ModelTokenizer | undefined> {
  const vocabSize = typeof config.vocab_size === "number" ? config.vocab_size : undefined;
  let tokenizer: Tokenizer | undefined = tokenizerFromFiles(files);
  if (tokenizer) {
    if (vocabSize !== undefined && tokenizer.vocabSize > vocabSize) {
      throw new ConfigError(
        `the tokenizer from ${source} has ${tokenizer.vocabSize} ids but the model's ` +
          `vocab_size is ${vocabSize}`,
      );
    }
  } else if (config.model_type === "gpt2" && vocabSize === 50257) {
    const { r50kTokenizer } = await import("./r50k.ts");
    tokenizer = await r50kTokenizer();
  }
  if (!tokenizer) return undefined;
  // The model's id, even where a tokenizer smaller than the embedding lacks it: the model can
  // still run it (checking it against vocab_size is the model config's job).
  const bos = tokenId(config, "bos_token_id") ?? tokenId(config, "eos_token_id");
  const modelType = typeof config.model_type === "string" ? config.model_type : "";
  return new FamilyTokenizer(tokenizer, bos, DEFAULT_PREPEND_BOS[modelType] ?? true);
}
