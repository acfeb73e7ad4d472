/**
 * The tokenizer interface the model uses for `toTokens`, `toStrTokens` and `toString`.
 * @module
 */

/**
 * Text <-> token ids. Both implementations (GPT-2's r50k_base from npm, and the BPE read from a
 * model folder's `tokenizer.json` or `vocab.json` + `merges.txt`) follow HF's tokenizers with
 * `add_special_tokens=False`: no BOS is added here (`ModelTokenizer.toTokens` does that, as
 * TransformerLens does), and an added token's text (`<|endoftext|>`, `<s>`) inside the input
 * encodes to its id.
 *
 * @example
 * ```ts
 * import type { Tokenizer } from "./tokenizer.ts";
 * function show(tok: Tokenizer, text: string): string {
 *   return tok.tokenStrings(tok.encode(text)).map((s) => JSON.stringify(s)).join(" ");
 * }
 * ```
 */
export interface Tokenizer {
  /** One more than the largest id it produces or decodes. */
  readonly vocabSize: number;
  /** Text -> ids, e.g. "Hello world" -> [15496, 995] for GPT-2. */
  encode(text: string): number[];
  /** Ids -> text; invalid UTF-8 (a sequence cut inside a character) decodes to U+FFFD. */
  decode(ids: number[]): string;
  /** Each id decoded on its own, as TransformerLens's `to_str_tokens` shows them. */
  tokenStrings(ids: number[]): string[];
}
