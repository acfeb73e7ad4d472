/**
 * Padded batches: which positions of each sequence hold real tokens, the attention mask that says
 * so, and TransformerLens's position ids (left padding shifts them so that the first real token
 * has position 0).
 *
 * A sequence's real tokens lie in one run `[first, end)`: left padding puts pads before it, right
 * padding after it, and masked positions inside it are holes. Attention never reads a key before
 * `first` (the kernels' `kStart`); keys after `end` come after every real query, so causality
 * already hides them from real positions; a hole's key is masked in the scores (-inf), as
 * TransformerLens masks every 0 of the attention mask.
 * @module
 */
import { InputError } from "../core/errors.ts";

/**
 * Where each sequence's real tokens are: positions `[first[b], end[b])`, less the `holes` inside
 * that run (masked positions between real tokens).
 */
export interface Padding {
  /** First real position of each sequence (the number of left pads). */
  first: Int32Array;
  /** One past the last real position of each sequence. */
  end: Int32Array;
  /**
   * [batch * T]: 1 at a masked position between real tokens (a 0 of the attention mask inside
   * `[first, end)`), else 0. Absent when there is none. A hole is never a key (as if the token
   * were removed), gets no position embedding, and does not advance the positions after it.
   */
  holes?: Uint8Array;
}

/**
 * Whether position t of sequence b is masked (a pad outside the real run, or a hole in it).
 *
 * @example
 * ```ts
 * import { isMasked } from "./padding.ts";
 * const p = { first: Int32Array.of(1), end: Int32Array.of(4), holes: Uint8Array.of(0, 0, 1, 0) };
 * [0, 1, 2, 3].map((t) => isMasked(p, 0, t, 4)); // [true, false, true, false]
 * ```
 */
export function isMasked(p: Padding | undefined, b: number, t: number, T: number): boolean {
  if (!p) return false;
  return t < p.first[b] || t >= p.end[b] || (p.holes !== undefined && p.holes[b * T + t] === 1);
}

/** An attention mask: `[batch, pos]` of 0 (padding) and 1 (real token). */
export type AttentionMask = number[][] | { data: ArrayLike<number>; shape: number[] };

/** The side that receives the pad tokens when sequences of different lengths are batched. */
export type PaddingSide = "left" | "right";

/**
 * The padding an attention mask describes: per row, the run from its first to its last 1, and
 * the 0s inside that run as `holes` (TransformerLens's masks with zeros between real tokens: a
 * zero column is as if that token were removed). Values other than 0 and 1, a wrong shape, and a
 * row with no 1 are {@link InputError}s.
 *
 * @example
 * ```ts
 * import { paddingFromMask } from "./padding.ts";
 * const p = paddingFromMask([[0, 0, 1, 1], [1, 0, 1, 0]], 2, 4);
 * p.first; // Int32Array [2, 0]
 * p.end; // Int32Array [4, 3]
 * p.holes; // Uint8Array [0, 0, 0, 0, 0, 1, 0, 0]: row 1's position 1
 * ```
 */
export function paddingFromMask(mask: AttentionMask, batch: number, T: number): Padding {
  let at: (b: number, t: number) => number;
  if (Array.isArray(mask)) {
    if (mask.length !== batch || mask.some((r) => !Array.isArray(r) || r.length !== T)) {
      throw new InputError(
        `attentionMask must have the tokens' shape [${batch}, ${T}], one row per sequence`,
      );
    }
    at = (b, t) => mask[b][t];
  } else if (mask && Array.isArray(mask.shape) && mask.data && "length" in mask.data) {
    const [mb, mt] = mask.shape;
    if (mask.shape.length !== 2 || mb !== batch || mt !== T || mask.data.length !== batch * T) {
      throw new InputError(
        `attentionMask has shape [${mask.shape}] but the tokens have shape [${batch}, ${T}]`,
      );
    }
    at = (b, t) => mask.data[b * T + t];
  } else {
    throw new InputError("attentionMask must be number[][] or { data, shape: [batch, pos] }");
  }
  const first = new Int32Array(batch), end = new Int32Array(batch);
  let holes: Uint8Array | undefined;
  for (let b = 0; b < batch; b++) {
    let lo = -1, hi = -1;
    for (let t = 0; t < T; t++) {
      const v = at(b, t);
      if (v !== 0 && v !== 1) {
        throw new InputError(`attentionMask[${b}][${t}] is ${v}: the mask holds 0 and 1 only`);
      }
      if (v === 1) {
        if (lo < 0) lo = t;
        hi = t;
      }
    }
    if (lo < 0) {
      throw new InputError(`attentionMask row ${b} has no 1: every sequence needs a real token`);
    }
    first[b] = lo;
    end[b] = hi + 1;
    for (let t = lo + 1; t < hi; t++) {
      if (at(b, t) === 0) (holes ??= new Uint8Array(batch * T))[b * T + t] = 1;
    }
  }
  return holes ? { first, end, holes } : { first, end };
}

/**
 * Whether a padding leaves every position of every sequence real (then it can be dropped).
 *
 * @example
 * ```ts
 * import { isUnpadded } from "./padding.ts";
 * isUnpadded({ first: Int32Array.of(0), end: Int32Array.of(4) }, 4); // true
 * ```
 */
export function isUnpadded(p: Padding, T: number): boolean {
  return !p.holes && p.first.every((f) => f === 0) && p.end.every((e) => e === T);
}

/**
 * TransformerLens's position id of each computed row (`get_offset_position_ids`: the cumulative
 * sum of the mask minus one, clipped at 0): `t - first` at real positions of a run without holes,
 * 0 before the first real token, the last real token's id after it and at a hole (a hole does not
 * advance the count, so the tokens after it are numbered as if it were removed). Sequence b
 * computes positions `[qStart[b], T)`; rows follow one another as the forward plan stores them.
 *
 * @example
 * ```ts
 * import { positionIds } from "./padding.ts";
 * const padding = { first: Int32Array.of(2), end: Int32Array.of(5) };
 * positionIds(1, 5, undefined, padding); // Int32Array [0, 0, 0, 1, 2]
 * const holes = { first: Int32Array.of(0), end: Int32Array.of(4), holes: Uint8Array.of(0, 1, 0, 0) };
 * positionIds(1, 4, undefined, holes); // Int32Array [0, 0, 1, 2]
 * ```
 */
export function positionIds(
  batch: number,
  T: number,
  qStart: ArrayLike<number> | undefined,
  padding: Padding | undefined,
): Int32Array {
  let rows = 0;
  for (let b = 0; b < batch; b++) rows += T - (qStart?.[b] ?? 0);
  const ids = new Int32Array(rows);
  let r = 0;
  for (let b = 0; b < batch; b++) {
    let real = 0; // the mask's cumulative sum up to t
    const from = qStart?.[b] ?? 0;
    for (let t = 0; t < T; t++) {
      if (!isMasked(padding, b, t, T)) real++;
      if (t >= from) ids[r++] = Math.max(real - 1, 0);
    }
  }
  return ids;
}

/**
 * Pads token sequences of different lengths into one batch with `padId`, on `side`, and returns
 * the batch with its padding. (The pad id is never attended to, so its value does not matter.)
 *
 * @example
 * ```ts
 * import { padSequences } from "./padding.ts";
 * const { tokens, padding } = padSequences([[5, 6, 7], [8]], 0, "left");
 * tokens; // [[5, 6, 7], [0, 0, 8]]
 * padding.first; // Int32Array [0, 2]
 * ```
 */
export function padSequences(
  seqs: number[][],
  padId: number,
  side: PaddingSide,
): { tokens: number[][]; padding: Padding } {
  if (side !== "left" && side !== "right") {
    throw new InputError(`paddingSide must be "left" or "right", got ${JSON.stringify(side)}`);
  }
  const T = Math.max(0, ...seqs.map((s) => s.length));
  const first = new Int32Array(seqs.length), end = new Int32Array(seqs.length);
  const tokens = seqs.map((s, b) => {
    if (s.length === 0) throw new InputError(`sequence ${b} has no tokens`);
    const pads = new Array<number>(T - s.length).fill(padId);
    first[b] = side === "left" ? T - s.length : 0;
    end[b] = first[b] + s.length;
    return side === "left" ? [...pads, ...s] : [...s, ...pads];
  });
  return { tokens, padding: { first, end } };
}
