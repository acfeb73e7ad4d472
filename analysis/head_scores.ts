/**
 * Attention-head scores on repeated tokens (induction, previous-token, duplicate-token) and single
 * attention patterns for plots.
 * @module
 */
import { InputError } from "../core/errors.ts";
import { checkHead } from "../model/checks.ts";
import { getActName } from "../model/hook_table.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { type Tokens, toTokenTensor } from "../model/tokens.ts";
import type { Tensor } from "../core/tensor.ts";
import { repeatedShape } from "./repeated_tokens.ts";

/**
 * Scores of every head, each `[nLayers][nHeads]`.
 *
 * @example
 * ```ts ignore
 * const { induction } = await headScores(model, tokens, 50);
 * induction[5][5]; // layer 5 head 5
 * ```
 */
export interface HeadScores {
  /** Mean attention on the diagonal at offset 1 - seqLen (the token after the earlier copy). */
  induction: number[][];
  /** Mean attention on the diagonal at offset -1 (the previous token). */
  previousToken: number[][];
  /** Mean attention on the diagonal at offset -seqLen (the earlier copy of the same token). */
  duplicateToken: number[][];
}

/**
 * Mean of `torch.diagonal(pattern[b, h], offset)` over the batch and the diagonal, for one
 * `[batch, head, q, k]` pattern tensor: the elements (i, i + offset) for offset >= 0 and
 * (i - offset, i) for offset < 0. Returns one value per head.
 *
 * @example
 * ```ts
 * import { diagonalMean } from "./head_scores.ts";
 * // One sequence, one head, 3 x 3 pattern: the previous-token diagonal holds 1 and 0.5.
 * const p = { data: new Float32Array([1, 0, 0, 1, 0, 0, 0, 0.5, 0.5]), shape: [1, 1, 3, 3] };
 * diagonalMean(p, -1); // [0.75]
 * ```
 */
export function diagonalMean(pattern: Tensor, offset: number): number[] {
  const [batch, nHeads, Q, K] = pattern.shape;
  const q0 = offset < 0 ? -offset : 0;
  const k0 = offset > 0 ? offset : 0;
  const len = Math.min(Q - q0, K - k0);
  if (len <= 0) {
    throw new InputError(`diagonal offset ${offset} is outside a ${Q} x ${K} pattern`);
  }
  const out = new Array<number>(nHeads).fill(0);
  for (let h = 0; h < nHeads; h++) {
    let s = 0;
    for (let b = 0; b < batch; b++) {
      const base = (b * nHeads + h) * Q * K;
      for (let i = 0; i < len; i++) s += pattern.data[base + (q0 + i) * K + k0 + i];
    }
    out[h] = s / (batch * len);
  }
  return out;
}

/**
 * The diagonal offsets of each score on repeated tokens `[BOS] + r + r` with |r| = seqLen: the
 * key one period back plus one (induction), the previous token, the key one period back
 * (duplicate token).
 *
 * @example
 * ```ts
 * import { scoreOffsets } from "./head_scores.ts";
 * scoreOffsets(50); // { induction: -49, previousToken: -1, duplicateToken: -50 }
 * ```
 */
export function scoreOffsets(seqLen: number): Record<keyof HeadScores, number> {
  return { induction: 1 - seqLen, previousToken: -1, duplicateToken: -seqLen };
}

/**
 * Adds `weight` times each score of one layer's pattern [batch, head, q, k] into row `layer` of
 * `scores` (so that groups of a batch can be scored one after another, weighted by their share).
 */
export function addScores(
  scores: HeadScores,
  layer: number,
  pattern: Tensor,
  seqLen: number,
  weight = 1,
): void {
  for (
    const [kind, offset] of Object.entries(scoreOffsets(seqLen)) as [keyof HeadScores, number][]
  ) {
    diagonalMean(pattern, offset).forEach((v, h) => scores[kind][layer][h] += v * weight);
  }
}

/** Scores of `nLayers` x `nHeads` heads, all zero. */
export function emptyScores(nLayers: number, nHeads: number): HeadScores {
  const zeros = () => Array.from({ length: nLayers }, () => new Array<number>(nHeads).fill(0));
  return { induction: zeros(), previousToken: zeros(), duplicateToken: zeros() };
}

/**
 * Induction, previous-token and duplicate-token scores of every head on repeated tokens
 * `[batch, 1 + 2 seqLen]`: `torch.diagonal(pattern, offset, -2, -1)` averaged over the batch and
 * the diagonal, with offsets 1 - seqLen, -1 and -seqLen (as ARENA's detectors compute them, BOS
 * and first-half queries included).
 *
 * One forward pass that caches only the `hook_pattern` points and skips the unembedding
 * (`returnType: "none"`). The cache holds every layer's pattern at once: 4 x batch x nHeads x T^2
 * bytes per layer (15 MB for GPT-2 small on 30 x 101 tokens, 176 MB for its 12 layers).
 *
 * @example
 * ```ts ignore
 * import { generateRepeatedTokens, headScores, HookedTransformer } from "./mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy");
 * const tokens = generateRepeatedTokens(model, 50, 30, { seed: 0 });
 * const { induction, previousToken } = await headScores(model, tokens, 50);
 * induction[1][2]; // about 0.87: layer 1 head 2 is the toy's induction head
 * ```
 */
export async function headScores(
  model: HookedTransformer,
  tokens: Tokens,
  seqLen: number,
): Promise<HeadScores> {
  const t = toTokenTensor(tokens, model.cfg);
  repeatedShape(t, seqLen);
  const names = Array.from({ length: model.cfg.nLayers }, (_, l) => getActName("pattern", l));
  const { cache } = await model.runWithCache(t, { namesFilter: names, returnType: "none" });
  const scores = emptyScores(model.cfg.nLayers, model.cfg.nHeads);
  names.forEach((name, l) => addScores(scores, l, cache.get(name), seqLen));
  return scores;
}

/**
 * One head's attention pattern for plots: `pattern[q][k]` of the first sequence.
 *
 * @example
 * ```ts ignore
 * const { pattern, tokens: ids } = await attentionPattern(model, tokens, 1, 2);
 * pattern[ids.length - 1]; // the last query's attention over all keys
 * ```
 */
export interface AttentionPattern {
  /** pattern[q][k], q and k = 0..T-1; entries above the diagonal (k > q) are 0. */
  pattern: number[][];
  /** The first sequence's token ids (axis labels). */
  tokens: number[];
}

/**
 * The attention pattern of `layer`'s head `head` on the first sequence of `tokens` (only that
 * sequence is run, caching only that layer's pattern, with no unembedding).
 *
 * @example
 * ```ts ignore
 * import { attentionPattern, generateRepeatedTokens, HookedTransformer } from "./mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy");
 * const { pattern } = await attentionPattern(model, generateRepeatedTokens(model, 10, 1), 1, 2);
 * pattern[15][6]; // high: query 15 attends to the token after the earlier copy of its token
 * ```
 */
export async function attentionPattern(
  model: HookedTransformer,
  tokens: Tokens,
  layer: number,
  head: number,
): Promise<AttentionPattern> {
  checkHead([layer, head], model.cfg, "attentionPattern");
  const t = toTokenTensor(tokens, model.cfg);
  const T = t.shape[1];
  const first = { data: t.data.slice(0, T), shape: [1, T] };
  const name = getActName("pattern", layer);
  const { cache } = await model.runWithCache(first, { namesFilter: name, returnType: "none" });
  const p = cache.get(name).data;
  const pattern: number[][] = [];
  for (let q = 0; q < T; q++) {
    const row = (head * T + q) * T;
    pattern.push(Array.from(p.subarray(row, row + T)));
  }
  return { pattern, tokens: Array.from(first.data) };
}
