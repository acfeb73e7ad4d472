/**
 * BPE tokenizers from a model's own files: `tokenizer.json` (HF tokenizers' format) for GPT-2,
 * GPT-NeoX (Pythia), Llama 3, Qwen2, SmolLM and SentencePiece-style Llama 2 / TinyLlama, or the
 * older `vocab.json` + `merges.txt` pair of GPT-2 fine-tunes. Encoding runs HF's pipeline: added
 * tokens are cut out first (those marked `normalized: false` on the raw text, the others after
 * normalization), each stretch between them is normalized and pre-tokenized, and each word goes
 * through the BPE model; the post-processor adds special tokens only when asked.
 *
 * One implementation serves every family (see `for_model.ts` for why it is not
 * `@huggingface/tokenizers`): it matches HF's Rust tokenizers id for id on the test corpora,
 * GPT-2's byte-level regex included.
 * @module
 */
import { ConfigError, InputError } from "../core/errors.ts";
import { BpeModel } from "./bpe_model.ts";
import { buildDecoder, type Decoder } from "./decoders.ts";
import { buildNormalizer, type Normalizer } from "./normalizers.ts";
import { buildPostProcessor, type PostProcessor } from "./post_processors.ts";
import { buildPreTokenizer, type PreTokenizer } from "./pre_tokenizers.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** One entry of `tokenizer.json`'s `added_tokens`. */
export interface AddedToken {
  /** Its id. */
  id: number;
  /** Its text, matched verbatim in the input. */
  content: string;
  /** Special tokens (BOS, EOS, padding) are dropped by `decode(..., skipSpecialTokens)`. */
  special?: boolean;
  /** Matched after normalization (true) or on the raw text (false). Default: `!special`. */
  normalized?: boolean;
  /** Swallows the whitespace before it. */
  lstrip?: boolean;
  /** Swallows the whitespace after it. */
  rstrip?: boolean;
  /** Only matched as a whole word. */
  single_word?: boolean;
}

/** Where a stretch of text starts in its input, and the added token it is, if it is one. */
interface Segment {
  text: string;
  start: number;
  id?: number;
}

function escapeRegExp(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/-]/g, "\\$&");
}

const WHITE = /\p{White_Space}/u;
const WORD = /[\p{L}\p{N}_]/u;

/** Finds added tokens in text, leftmost-longest, with their lstrip/rstrip/single_word options. */
class AddedTokenMatcher {
  #re: RegExp | undefined;
  #tokens: Map<string, AddedToken>;

  constructor(tokens: AddedToken[]) {
    this.#tokens = new Map(tokens.map((t) => [t.content, t]));
    if (tokens.length > 0) {
      // Longest first: JavaScript alternation is leftmost-first, HF's matcher leftmost-longest.
      const alts = [...this.#tokens.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp);
      this.#re = new RegExp(alts.join("|"), "gu");
    }
  }

  /** `text` cut into plain stretches and added tokens (offsets relative to `base`). */
  split(text: string, base: number): Segment[] {
    if (!this.#re) return [{ text, start: base }];
    const out: Segment[] = [];
    let last = 0;
    for (const m of text.matchAll(this.#re)) {
      const token = this.#tokens.get(m[0])!;
      let s = m.index;
      let e = s + m[0].length;
      if (s < last) continue;
      if (
        token.single_word &&
        ((s > 0 && WORD.test(text[s - 1])) || (e < text.length && WORD.test(text[e])))
      ) continue;
      if (token.lstrip) { while (s > last && WHITE.test(text[s - 1])) s--; }
      if (token.rstrip) { while (e < text.length && WHITE.test(text[e])) e++; }
      if (s > last) out.push({ text: text.slice(last, s), start: base + last });
      out.push({ text: text.slice(s, e), start: base + s, id: token.id });
      last = e;
    }
    if (last < text.length) out.push({ text: text.slice(last), start: base + last });
    return out;
  }
}

/**
 * A BPE tokenizer with HF tokenizers' semantics.
 *
 * @example
 * ```ts
 * import { BpeTokenizer } from "./bpe.ts";
 * const tok = BpeTokenizer.fromVocabAndMerges(
 *   JSON.stringify({ "a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4 }),
 *   "#version: 0.2\na b\nĠ ab\n",
 * );
 * tok.encode("ab ab"); // [3, 4]
 * tok.decode([3, 4]); // "ab ab"
 * ```
 */
export class BpeTokenizer implements Tokenizer {
  /** One more than the largest id (vocabulary plus added tokens). */
  readonly vocabSize: number;
  #model: BpeModel;
  #normalizer: Normalizer | undefined;
  #preTokenizer: PreTokenizer | undefined;
  #postProcessor: PostProcessor;
  #decoder: Decoder;
  #rawAdded: AddedTokenMatcher;
  #normalizedAdded: AddedTokenMatcher;
  #addedById = new Map<number, AddedToken>();

  /** Builds the tokenizer from a parsed `tokenizer.json`; see {@link BpeTokenizer.fromTokenizerJson}. */
  constructor(json: Record<string, unknown>) {
    this.#model = new BpeModel(json.model);
    this.#normalizer = buildNormalizer(json.normalizer);
    this.#preTokenizer = buildPreTokenizer(json.pre_tokenizer);
    this.#postProcessor = buildPostProcessor(json.post_processor);
    this.#decoder = buildDecoder(json.decoder);
    const added = parseAddedTokens(json.added_tokens);
    for (const t of added) this.#addedById.set(t.id, t);
    this.#rawAdded = new AddedTokenMatcher(added.filter((t) => !(t.normalized ?? !t.special)));
    this.#normalizedAdded = new AddedTokenMatcher(added.filter((t) => t.normalized ?? !t.special));
    // A loop, not Math.max(...spread): a file may list hundreds of thousands of added tokens.
    let size = this.#model.tokens.length;
    for (const t of added) if (t.id + 1 > size) size = t.id + 1;
    this.vocabSize = size;
  }

  /**
   * Reads an HF `tokenizer.json` with a BPE model. Throws ConfigError for invalid JSON, another
   * model type, or a component this library does not implement (naming it).
   *
   * @example
   * ```ts
   * import { BpeTokenizer } from "./bpe.ts";
   * // The embedded kjv-small's tokenizer (any model folder's tokenizer.json reads the same way).
   * const file = new URL("../weights/kjv-small/tokenizer.json", import.meta.url);
   * const tok = BpeTokenizer.fromTokenizerJson(await Deno.readTextFile(file));
   * tok.encode("And God said"); // [295, 394, 380]
   * tok.decode([295, 394, 380]); // "And God said"
   * ```
   */
  static fromTokenizerJson(text: string): BpeTokenizer {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new ConfigError(`tokenizer.json is not valid JSON: ${(e as Error).message}`);
    }
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new ConfigError("tokenizer.json must hold a JSON object");
    }
    return new BpeTokenizer(json as Record<string, unknown>);
  }

  /**
   * Reads the older pair of files: `vocab.json` (token -> id) and `merges.txt` (one merge a line,
   * after a `#version` line), as GPT-2's byte-level BPE. `<|endoftext|>`, when in the vocabulary,
   * is a special token.
   *
   * @example
   * ```ts ignore
   * import { BpeTokenizer } from "./bpe.ts";
   * const tok = BpeTokenizer.fromVocabAndMerges(
   *   await Deno.readTextFile("gpt2/vocab.json"),
   *   await Deno.readTextFile("gpt2/merges.txt"),
   * );
   * ```
   */
  static fromVocabAndMerges(vocabJson: string, mergesTxt: string): BpeTokenizer {
    let vocab: unknown;
    try {
      vocab = JSON.parse(vocabJson);
    } catch (e) {
      throw new ConfigError(`vocab.json is not valid JSON: ${(e as Error).message}`);
    }
    if (typeof vocab !== "object" || vocab === null || Array.isArray(vocab)) {
      throw new ConfigError("vocab.json must be an object mapping tokens to ids");
    }
    const merges: string[] = [];
    mergesTxt.split(/\r?\n/).forEach((line, i) => {
      if (line === "" || (i === 0 && line.startsWith("#version"))) return;
      if (line.split(" ").length !== 2) {
        throw new ConfigError(
          `merges.txt line ${i + 1} is not two tokens: ${JSON.stringify(line)}`,
        );
      }
      merges.push(line);
    });
    const eot = (vocab as Record<string, unknown>)["<|endoftext|>"];
    return new BpeTokenizer({
      added_tokens: typeof eot === "number"
        ? [{ id: eot, content: "<|endoftext|>", special: true, normalized: false }]
        : [],
      pre_tokenizer: { type: "ByteLevel", add_prefix_space: false },
      decoder: { type: "ByteLevel" },
      model: { type: "BPE", vocab, merges },
    });
  }

  /**
   * Text -> ids. Added tokens' text (`<|endoftext|>`, `<s>`) in the input becomes their ids, as in
   * HF. `addSpecialTokens` also runs the post-processor (Llama's tokenizers then prepend BOS);
   * default false, as the model's `toTokens` decides about BOS itself.
   */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    const ids: number[] = [];
    for (const segment of this.#rawAdded.split(text, 0)) {
      if (segment.id !== undefined) {
        ids.push(segment.id);
        continue;
      }
      const normalized = this.#normalizer ? this.#normalizer(segment.text) : segment.text;
      for (const sub of this.#normalizedAdded.split(normalized, 0)) {
        if (sub.id !== undefined) {
          ids.push(sub.id);
          continue;
        }
        if (sub.text === "") continue;
        const atStart = segment.start === 0 && sub.start === 0;
        const words = this.#preTokenizer ? this.#preTokenizer([sub.text], atStart) : [sub.text];
        for (const word of words) for (const id of this.#model.tokenize(word)) ids.push(id);
      }
    }
    return opts.addSpecialTokens ? this.#postProcessor(ids) : ids;
  }

  /**
   * Ids -> text, through the tokenizer's decoder (invalid UTF-8 becomes U+FFFD). Throws
   * InputError for an id outside the vocabulary.
   */
  decode(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    const tokens: string[] = [];
    for (const id of ids) {
      const added = this.#addedById.get(id);
      const token = added?.content ?? (Number.isInteger(id) ? this.#model.tokens[id] : undefined);
      if (token === undefined) {
        throw new InputError(
          `token id ${id} is not in this tokenizer's vocabulary (0..${this.vocabSize - 1})`,
        );
      }
      if (!(opts.skipSpecialTokens && added?.special)) tokens.push(token);
    }
    return this.#decoder(tokens).join("");
  }

  /** Each id decoded on its own, as TransformerLens's `to_str_tokens` shows them. */
  tokenStrings(ids: number[]): string[] {
    return ids.map((id) => this.decode([id]));
  }
}

function parseAddedTokens(value: unknown): AddedToken[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new ConfigError("tokenizer.json added_tokens must be a list");
  return value.map((t) => {
    const token = t as AddedToken;
    if (!Number.isSafeInteger(token?.id) || token.id < 0 || typeof token.content !== "string") {
      throw new ConfigError(`tokenizer.json has a malformed added token ${JSON.stringify(t)}`);
    }
    if (token.content === "") throw new ConfigError("tokenizer.json has an empty added token");
    return token;
  });
}

/** The tokenizer files a model folder may hold (text contents; absent = undefined). */
export interface TokenizerFiles {
  /** `tokenizer.json` */
  tokenizerJson?: string;
  /** `vocab.json` */
  vocabJson?: string;
  /** `merges.txt` */
  mergesTxt?: string;
}

/**
 * The BPE a model folder's files describe: `tokenizer.json` when present, else `vocab.json` +
 * `merges.txt`, else undefined.
 *
 * @example
 * ```ts
 * import { tokenizerFromFiles } from "./bpe.ts";
 * tokenizerFromFiles({}); // undefined: no tokenizer files
 * ```
 */
export function tokenizerFromFiles(files: TokenizerFiles): BpeTokenizer | undefined {
  if (files.tokenizerJson !== undefined) return BpeTokenizer.fromTokenizerJson(files.tokenizerJson);
  if (files.vocabJson !== undefined && files.mergesTxt !== undefined) {
    return BpeTokenizer.fromVocabAndMerges(files.vocabJson, files.mergesTxt);
  }
  return undefined;
}
