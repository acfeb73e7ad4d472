/**
 * GPT-2's byte-level BPE, built from a model folder's `tokenizer.json` or `vocab.json` +
 * `merges.txt` (so fine-tuned checkpoints with their own vocabularies tokenize as HF does).
 * @module
 */
import { ConfigError, InputError } from "../core/errors.ts";
import { fromByteLevel, preTokenize, toByteLevel } from "./byte_level.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** What a byte-level BPE is made of. */
export interface BpeSpec {
  /** Byte-level token string -> id (the contents of `vocab.json`). */
  vocab: Record<string, number>;
  /** Merge rules, highest priority first (the lines of `merges.txt`). */
  merges: Array<[string, string]>;
  /** Tokens matched verbatim in the text before BPE, e.g. `<|endoftext|>`. */
  addedTokens?: Array<{ id: number; content: string }>;
  /** Prepend a space to the text when it has none (GPT-2: false). */
  addPrefixSpace?: boolean;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();
const CACHE_LIMIT = 50_000;

function escapeRegExp(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/-]/g, "\\$&");
}

/**
 * A GPT-2-style byte-level BPE tokenizer.
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
  #vocab: Map<string, number>;
  #ranks = new Map<string, number>();
  #idBytes: (Uint8Array | undefined)[];
  #added = new Map<string, number>();
  #addedPattern: RegExp | undefined;
  #addPrefixSpace: boolean;
  #cache = new Map<string, number[]>();

  /** Builds the tokenizer from its parts; see {@link BpeTokenizer.fromTokenizerJson} for files. */
  constructor(spec: BpeSpec) {
    this.#vocab = new Map(Object.entries(spec.vocab));
    this.#addPrefixSpace = spec.addPrefixSpace ?? false;
    spec.merges.forEach(([a, b], rank) => {
      const key = `${a} ${b}`;
      if (!this.#ranks.has(key)) this.#ranks.set(key, rank);
    });
    let maxId = -1;
    for (const id of this.#vocab.values()) {
      if (!Number.isInteger(id) || id < 0) {
        throw new ConfigError(`tokenizer vocabulary has an invalid id ${id}`);
      }
      maxId = Math.max(maxId, id);
    }
    for (const t of spec.addedTokens ?? []) {
      this.#added.set(t.content, t.id);
      maxId = Math.max(maxId, t.id);
    }
    this.vocabSize = maxId + 1;
    this.#idBytes = new Array(this.vocabSize);
    for (const [token, id] of this.#vocab) this.#idBytes[id] = fromByteLevel(token);
    for (const [content, id] of this.#added) this.#idBytes[id] = encoder.encode(content);
    if (this.#added.size > 0) {
      // Longest first, so a token that is a prefix of another does not win.
      const alts = [...this.#added.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp);
      this.#addedPattern = new RegExp(alts.join("|"), "gu");
    }
  }

  /**
   * Reads an HF `tokenizer.json` (a `BPE` model with a `ByteLevel` pre-tokenizer, as GPT-2's).
   * Throws ConfigError for any other kind of tokenizer.
   *
   * @example
   * ```ts
   * import { BpeTokenizer } from "./bpe.ts";
   * const tok = BpeTokenizer.fromTokenizerJson(await Deno.readTextFile("gpt2/tokenizer.json"));
   * tok.encode("Hello world"); // [15496, 995]
   * ```
   */
  static fromTokenizerJson(text: string): BpeTokenizer {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new ConfigError(`tokenizer.json is not valid JSON: ${(e as Error).message}`);
    }
    const root = json as Record<string, unknown>;
    const model = root?.model as Record<string, unknown> | undefined;
    if (!model || model.type !== "BPE" || typeof model.vocab !== "object" || !model.vocab) {
      throw new ConfigError(
        `tokenizer.json has model type ${JSON.stringify(model?.type)}; only GPT-2's byte-level ` +
          `BPE is supported`,
      );
    }
    if (root.normalizer != null) {
      throw new ConfigError(
        `tokenizer.json has a normalizer (${JSON.stringify(root.normalizer)}); GPT-2's has none`,
      );
    }
    const byteLevel = findByteLevel(root.pre_tokenizer);
    if (!byteLevel) {
      throw new ConfigError(
        "tokenizer.json has no ByteLevel pre-tokenizer; only GPT-2's byte-level BPE is supported",
      );
    }
    const merges = parseMergeList(model.merges);
    const addedTokens: Array<{ id: number; content: string }> = [];
    if (Array.isArray(root.added_tokens)) {
      for (const t of root.added_tokens as Array<Record<string, unknown>>) {
        if (typeof t.id !== "number" || typeof t.content !== "string") {
          throw new ConfigError(`tokenizer.json has a malformed added token ${JSON.stringify(t)}`);
        }
        addedTokens.push({ id: t.id, content: t.content });
      }
    }
    return new BpeTokenizer({
      vocab: model.vocab as Record<string, number>,
      merges,
      addedTokens,
      addPrefixSpace: byteLevel.add_prefix_space === true,
    });
  }

  /**
   * Reads the older pair of files: `vocab.json` (token -> id) and `merges.txt` (one merge a line,
   * after a `#version` line). `<|endoftext|>`, when in the vocabulary, is a special token.
   *
   * @example
   * ```ts
   * import { BpeTokenizer } from "./bpe.ts";
   * const tok = BpeTokenizer.fromVocabAndMerges(
   *   await Deno.readTextFile("gpt2/vocab.json"),
   *   await Deno.readTextFile("gpt2/merges.txt"),
   * );
   * ```
   */
  static fromVocabAndMerges(vocabJson: string, mergesTxt: string): BpeTokenizer {
    let vocab: Record<string, number>;
    try {
      vocab = JSON.parse(vocabJson);
    } catch (e) {
      throw new ConfigError(`vocab.json is not valid JSON: ${(e as Error).message}`);
    }
    if (typeof vocab !== "object" || vocab === null || Array.isArray(vocab)) {
      throw new ConfigError("vocab.json must be an object mapping tokens to ids");
    }
    const merges: Array<[string, string]> = [];
    const lines = mergesTxt.split(/\r?\n/);
    lines.forEach((line, i) => {
      if (line === "" || (i === 0 && line.startsWith("#version"))) return;
      const parts = line.split(" ");
      if (parts.length !== 2) {
        throw new ConfigError(
          `merges.txt line ${i + 1} is not two tokens: ${JSON.stringify(line)}`,
        );
      }
      merges.push([parts[0], parts[1]]);
    });
    const eot = vocab["<|endoftext|>"];
    const addedTokens = typeof eot === "number" ? [{ id: eot, content: "<|endoftext|>" }] : [];
    return new BpeTokenizer({ vocab, merges, addedTokens });
  }

  /** Text -> ids. */
  encode(text: string): number[] {
    const ids: number[] = [];
    if (this.#addPrefixSpace && text.length > 0 && !text.startsWith(" ")) text = " " + text;
    if (!this.#addedPattern) {
      this.#encodeOrdinary(text, ids);
      return ids;
    }
    let start = 0;
    for (const m of text.matchAll(this.#addedPattern)) {
      this.#encodeOrdinary(text.slice(start, m.index), ids);
      ids.push(this.#added.get(m[0])!);
      start = m.index + m[0].length;
    }
    this.#encodeOrdinary(text.slice(start), ids);
    return ids;
  }

  /** Ids -> text (invalid UTF-8 becomes U+FFFD). Throws InputError for an unknown id. */
  decode(ids: number[]): string {
    const parts: Uint8Array[] = [];
    let length = 0;
    for (const id of ids) {
      const bytes = Number.isInteger(id) ? this.#idBytes[id] : undefined;
      if (!bytes) {
        throw new InputError(
          `token id ${id} is not in this tokenizer's vocabulary (0..${this.vocabSize - 1})`,
        );
      }
      parts.push(bytes);
      length += bytes.length;
    }
    const all = new Uint8Array(length);
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return decoder.decode(all);
  }

  /** Each id decoded on its own. */
  tokenStrings(ids: number[]): string[] {
    return ids.map((id) => this.decode([id]));
  }

  #encodeOrdinary(text: string, out: number[]): void {
    if (text === "") return;
    for (const word of preTokenize(text)) {
      let ids = this.#cache.get(word);
      if (!ids) {
        ids = this.#bpe(toByteLevel(word));
        if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
        this.#cache.set(word, ids);
      }
      for (const id of ids) out.push(id);
    }
  }

  #bpe(word: string): number[] {
    const whole = this.#vocab.get(word);
    if (whole !== undefined && [...word].length === 1) return [whole];
    let symbols = [...word];
    while (symbols.length > 1) {
      let best = Infinity;
      let bestPair = "";
      for (let i = 0; i < symbols.length - 1; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        const rank = this.#ranks.get(key);
        if (rank !== undefined && rank < best) {
          best = rank;
          bestPair = key;
        }
      }
      if (best === Infinity) break;
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i < symbols.length - 1 && `${symbols[i]} ${symbols[i + 1]}` === bestPair) {
          merged.push(symbols[i] + symbols[i + 1]);
          i++;
        } else {
          merged.push(symbols[i]);
        }
      }
      symbols = merged;
    }
    return symbols.map((s) => {
      const id = this.#vocab.get(s);
      if (id === undefined) {
        throw new ConfigError(
          `the tokenizer's vocabulary has no token ${JSON.stringify(s)} (a byte-level BPE ` +
            `vocabulary must hold all 256 single bytes)`,
        );
      }
      return id;
    });
  }
}

function findByteLevel(pre: unknown): Record<string, unknown> | undefined {
  const p = pre as Record<string, unknown> | null | undefined;
  if (!p) return undefined;
  if (p.type === "ByteLevel") return p;
  if (p.type === "Sequence" && Array.isArray(p.pretokenizers)) {
    for (const inner of p.pretokenizers) {
      const found = findByteLevel(inner);
      if (found) return found;
    }
  }
  return undefined;
}

function parseMergeList(merges: unknown): Array<[string, string]> {
  if (!Array.isArray(merges)) throw new ConfigError("tokenizer.json model.merges is not a list");
  return merges.map((m, i) => {
    if (typeof m === "string") {
      const parts = m.split(" ");
      if (parts.length === 2) return [parts[0], parts[1]];
    } else if (Array.isArray(m) && m.length === 2 && m.every((x) => typeof x === "string")) {
      return [m[0], m[1]];
    }
    throw new ConfigError(`tokenizer.json merge ${i} is malformed: ${JSON.stringify(m)}`);
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
 * const tok = tokenizerFromFiles({ tokenizerJson: await Deno.readTextFile("gpt2/tokenizer.json") });
 * tok?.encode("Hello world"); // [15496, 995]
 * ```
 */
export function tokenizerFromFiles(files: TokenizerFiles): BpeTokenizer | undefined {
  if (files.tokenizerJson !== undefined) return BpeTokenizer.fromTokenizerJson(files.tokenizerJson);
  if (files.vocabJson !== undefined && files.mergesTxt !== undefined) {
    return BpeTokenizer.fromVocabAndMerges(files.vocabJson, files.mergesTxt);
  }
  return undefined;
}
