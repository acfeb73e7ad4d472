/**
 * Tokenizers: GPT-2's r50k_base from npm, or the BPE a model's own files describe
 * (`tokenizer.json` of GPT-2, GPT-NeoX, Llama, Qwen2, SentencePiece-style models, or
 * `vocab.json` + `merges.txt`).
 *
 * @example
 * ```ts
 * import { r50kTokenizer } from "./mod.ts";
 * const tok = await r50kTokenizer();
 * tok.encode("Hello world"); // [15496, 995]
 * ```
 * @module
 */
export type { Tokenizer } from "./tokenizer.ts";
export { type AddedToken, BpeTokenizer, type TokenizerFiles, tokenizerFromFiles } from "./bpe.ts";
export { R50K_END_OF_TEXT, R50K_VOCAB_SIZE, r50kTokenizer } from "./r50k.ts";
export { GPT2_PATTERN, preTokenize } from "./byte_level.ts";
export { readTokenizerFiles, tokenizerForModel } from "./for_model.ts";
export { loadPatternEngine } from "./pattern.ts";
