/**
 * Which tokenizer a model gets: the one its files describe (`tokenizer.json`, or `vocab.json` +
 * `merges.txt`), else the one its family implies (GPT-2's r50k_base), else none.
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import { type TokenizerFiles, tokenizerFromFiles } from "./bpe.ts";
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
  const fromFiles = tokenizerFromFiles(files);
  if (fromFiles) {
    if (vocabSize !== undefined && fromFiles.vocabSize > vocabSize) {
      throw new ConfigError(
        `the tokenizer from ${source} has ${fromFiles.vocabSize} ids but the model's ` +
          `vocab_size is ${vocabSize}`,
      );
    }
    return fromFiles;
  }
  if (config.model_type === "gpt2" && vocabSize === 50257) {
    const { r50kTokenizer } = await import("./r50k.ts");
    return await r50kTokenizer();
  }
  return undefined;
}
