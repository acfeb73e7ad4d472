/**
 * Which tokenizer a model gets: the one its files describe (`tokenizer.json`, or `vocab.json` +
 * `merges.txt`), else the one its family implies (GPT-2's r50k_base), else none. Whether and
 * which BOS token is prepended is the model's config (`defaultPrependBos`, `bosTokenId`, set by
 * each family module as TransformerLens does), not the tokenizer's.
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
import { ConfigError } from "../core/errors.ts";
import { type TokenizerFiles, tokenizerFromFiles } from "./bpe.ts";
import { loadPatternEngine, needsPatternEngine } from "./pattern.ts";
import type { Tokenizer } from "./tokenizer.ts";

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

/**
 * The tokenizer of a model with this `config.json`, from its tokenizer files when they exist
 * (checked against `vocab_size`), else r50k_base for GPT-2's vocabulary (loaded lazily, so URL
 * importers that never tokenize never download it), else undefined (token ids only).
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
): Promise<Tokenizer | undefined> {
  const vocabSize = typeof config.vocab_size === "number" ? config.vocab_size : undefined;
  if (
    files.tokenizerJson !== undefined && regexSources(files.tokenizerJson).some(needsPatternEngine)
  ) {
    await loadPatternEngine(); // when it cannot be loaded, the pattern is a ConfigError below
  }
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
  return tokenizer;
}

/** The `"Regex"` strings of a tokenizer.json's text (without parsing the whole file). */
function regexSources(json: string): string[] {
  const out: string[] = [];
  for (const m of json.matchAll(/"Regex"\s*:\s*("(?:[^"\\]|\\.)*")/g)) {
    try {
      out.push(JSON.parse(m[1]));
    } catch {
      // malformed: the JSON parse of the whole file reports it
    }
  }
  return out;
}
