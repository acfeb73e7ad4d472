/**
 * The BPE model of `tokenizer.json`: a vocabulary, ranked merges, and HF's options for words the
 * merges do not cover: `ignore_merges` (Llama 3: a word already in the vocabulary is one token),
 * `byte_fallback` (SentencePiece-style: an unknown character becomes its UTF-8 bytes `<0xE4>` ...),
 * and `unk_token` with `fuse_unk`. Merging follows HF exactly: the lowest-ranked pair first,
 * leftmost among equals, through a heap, so a long word (SentencePiece models see a whole
 * sentence as one word) costs O(n log n), not O(n^2).
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import { component } from "./component.ts";
import { heapPop, heapPush } from "./min_heap.ts";

const utf8 = new TextEncoder();

/** Word -> ids, with a cache of recent words. */
export class BpeModel {
  /** Token string -> id. */
  readonly vocab: ReadonlyMap<string, number>;
  /** id -> token string (holes for ids only added tokens use). */
  readonly tokens: readonly (string | undefined)[];
  #mergeRank: PairTable; // (left id, right id) -> rank
  #mergeInto: Int32Array; // rank -> merged id
  #ignoreMerges: boolean;
  #byteFallback: number[] | undefined; // byte -> id of <0xXX>
  #unk: number | undefined;
  #fuseUnk: boolean;
  #cache = new Map<string, number[]>();

  /**
   * Builds the model from `tokenizer.json`'s `model` object. ConfigError for anything but a BPE
   * without dropout and without word prefixes or suffixes.
   */
  constructor(value: unknown) {
    const c = component(value, "model");
    if (c.type !== "BPE") {
      throw new ConfigError(
        `tokenizer.json has a ${JSON.stringify(c.type)} model; only BPE models (GPT-2, ` +
          `GPT-NeoX, Llama, Qwen2, SentencePiece BPE) are supported`,
      );
    }
    if (typeof c.dropout === "number" && c.dropout > 0) {
      throw new ConfigError("tokenizer.json BPE has dropout, which makes encoding random");
    }
    for (const f of ["continuing_subword_prefix", "end_of_word_suffix"]) {
      if (typeof c[f] === "string" && c[f] !== "") {
        throw new ConfigError(`tokenizer.json BPE sets ${f}, which is not supported`);
      }
    }
    const vocab = c.vocab;
    if (typeof vocab !== "object" || vocab === null || Array.isArray(vocab)) {
      throw new ConfigError("tokenizer.json model.vocab must map tokens to ids");
    }
    const map = new Map<string, number>();
    const tokens: (string | undefined)[] = [];
    // Plain loops, no per-entry arrays or closures: Llama 3 has 128k tokens and 280k merges.
    for (const token in vocab) {
      const id = (vocab as Record<string, unknown>)[token];
      if (!Number.isSafeInteger(id) || (id as number) < 0 || (id as number) > 2 ** 24) {
        throw new ConfigError(`tokenizer.json vocabulary id of ${JSON.stringify(token)} is ${id}`);
      }
      map.set(token, id as number);
      tokens[id as number] = token;
    }
    this.vocab = map;
    this.tokens = tokens;
    const merges = c.merges;
    if (!Array.isArray(merges)) throw new ConfigError("tokenizer.json model.merges is not a list");
    if (merges.length >= 2 ** 21) {
      throw new ConfigError(
        `tokenizer.json has ${merges.length} merges; at most 2^21 are supported`,
      );
    }
    this.#mergeRank = new PairTable(merges.length);
    this.#mergeInto = new Int32Array(merges.length);
    for (let rank = 0; rank < merges.length; rank++) {
      const [a, b] = mergePair(merges[rank], rank);
      const ia = map.get(a);
      const ib = map.get(b);
      const merged = map.get(a + b);
      if (ia === undefined || ib === undefined || merged === undefined) {
        throw new ConfigError(
          `tokenizer.json merge ${rank} (${JSON.stringify(a)} + ${JSON.stringify(b)}) uses a ` +
            `token that is not in the vocabulary`,
        );
      }
      this.#mergeRank.setIfAbsent(ia, ib, rank);
      this.#mergeInto[rank] = merged;
    }
    this.#ignoreMerges = c.ignore_merges === true;
    if (c.byte_fallback === true) {
      const ids = Array.from(
        { length: 256 },
        (_, b) => map.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`),
      );
      if (ids.some((id) => id === undefined)) {
        throw new ConfigError("tokenizer.json BPE has byte_fallback but not all 256 <0xXX> tokens");
      }
      this.#byteFallback = ids as number[];
    }
    if (typeof c.unk_token === "string") {
      this.#unk = map.get(c.unk_token);
      if (this.#unk === undefined) {
        throw new ConfigError(`tokenizer.json unk_token ${c.unk_token} is not in the vocabulary`);
      }
    }
    this.#fuseUnk = c.fuse_unk === true;
  }

  /** The ids of one pre-tokenized word. */
  tokenize(word: string): number[] {
    const cached = this.#cache.get(word);
    if (cached) return cached;
    const ids = this.#tokenize(word);
    if (word.length <= 256) {
      if (this.#cache.size >= 50_000) this.#cache.clear();
      this.#cache.set(word, ids);
    }
    return ids;
  }

  #tokenize(word: string): number[] {
    if (this.#ignoreMerges) {
      const whole = this.vocab.get(word);
      if (whole !== undefined) return [whole];
    }
    // Initial symbols: one per character, else its bytes, else unk.
    const ids: number[] = [];
    let lastWasUnk = false;
    for (const ch of word) {
      const id = this.vocab.get(ch);
      if (id !== undefined) {
        ids.push(id);
        lastWasUnk = false;
        continue;
      }
      if (this.#byteFallback) {
        for (const b of utf8.encode(ch)) ids.push(this.#byteFallback[b]);
        lastWasUnk = false;
        continue;
      }
      if (this.#unk === undefined) {
        throw new ConfigError(
          `the character ${JSON.stringify(ch)} (U+${
            ch.codePointAt(0)!.toString(16).toUpperCase()
          }) is not in this tokenizer's vocabulary, which has no byte fallback and no unknown ` +
            `token (a byte-level vocabulary must hold all 256 byte characters)`,
        );
      }
      if (!(this.#fuseUnk && lastWasUnk)) ids.push(this.#unk);
      lastWasUnk = true;
    }
    return this.#merge(ids);
  }

  /** Applies merges, lowest rank first and leftmost among equal ranks, via a binary heap. */
  #merge(ids: number[]): number[] {
    const n = ids.length;
    if (n < 2) return ids;
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const rankAt = (i: number): number | undefined => {
      const j = next[i];
      return j < 0 ? undefined : this.#mergeRank.get(ids[i], ids[j]);
    };
    // Heap of rank * 2^32 + position: ranks < 2^21 and positions < 2^32 stay exact.
    const heap: number[] = [];
    const push = (i: number) => {
      const r = rankAt(i);
      if (r !== undefined) heapPush(heap, r * 2 ** 32 + i);
    };
    for (let i = 0; i < n - 1; i++) push(i);
    while (heap.length > 0) {
      const top = heapPop(heap);
      const rank = Math.floor(top / 2 ** 32);
      const i = top - rank * 2 ** 32;
      // Stale entries (a symbol merged away since, or a pair that changed) are skipped.
      if (ids[i] < 0 || rankAt(i) !== rank) continue;
      const j = next[i];
      ids[i] = this.#mergeInto[rank];
      ids[j] = -1;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      if (prev[i] >= 0) push(prev[i]);
      push(i);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(ids[i]);
    return out;
  }
}

/**
 * An open-addressing hash table from a pair of ids to a number, in typed arrays: loading Llama 3's
 * 280k merges into a Map of pair keys costs seconds; this takes milliseconds and looks up faster.
 */
class PairTable {
  #mask: number;
  #left: Int32Array;
  #right: Int32Array;
  #value: Int32Array;

  constructor(entries: number) {
    let size = 16;
    while (size < entries * 2) size *= 2;
    this.#mask = size - 1;
    this.#left = new Int32Array(size).fill(-1);
    this.#right = new Int32Array(size);
    this.#value = new Int32Array(size);
  }

  #slot(a: number, b: number): number {
    let i = (Math.imul(a, 0x9e3779b1) ^ Math.imul(b, 0x85ebca77)) & this.#mask;
    while (this.#left[i] !== -1 && (this.#left[i] !== a || this.#right[i] !== b)) {
      i = (i + 1) & this.#mask;
    }
    return i;
  }

  setIfAbsent(a: number, b: number, value: number): void {
    const i = this.#slot(a, b);
    if (this.#left[i] !== -1) return;
    this.#left[i] = a;
    this.#right[i] = b;
    this.#value[i] = value;
  }

  get(a: number, b: number): number | undefined {
    const i = this.#slot(a, b);
    return this.#left[i] === -1 ? undefined : this.#value[i];
  }
}
/** One merge rule, from either spelling `tokenizer.json` uses: `"a b"` or `["a", "b"]`. */
function mergePair(m: unknown, rank: number): [string, string] {
  if (typeof m === "string") {
    const space = m.indexOf(" ");
    if (space > 0 && space === m.lastIndexOf(" ") && space < m.length - 1) {
      return [m.slice(0, space), m.slice(space + 1)];
    }
  } else if (
    Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string"
  ) {
    return [m[0], m[1]];
  }
  throw new ConfigError(`tokenizer.json merge ${rank} is malformed: ${JSON.stringify(m)}`);
}
