/**
 * Searching a model for a kind of attention head by comparing each head's attention pattern with
 * the pattern that kind would show, as TransformerLens's `head_detector.detect_head`.
 * @module
 */
import { InputError } from "../core/errors.ts";
import { checkOptions } from "../core/options.ts";
import type { Tensor } from "../core/tensor.ts";
import type { ActivationCache } from "../model/activation_cache.ts";
import { getActName } from "../model/hook_table.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";

/** The head kinds with a built-in detection pattern. */
export type HeadName = "previous_token_head" | "duplicate_token_head" | "induction_head";

/** `"mul"`: share of attention on the pattern's entries; `"abs"`: 1 - mean absolute error. */
export type ErrorMeasure = "mul" | "abs";

/** Options of {@link detectHead}. */
export interface DetectHeadOptions {
  /** Only these heads (`[layer, head]` pairs); the others score -1. Default: every head. */
  heads?: [number, number][];
  /** A cache of the (single) sequence's run, to skip running the model. */
  cache?: ActivationCache;
  /** Ignore attention to the first position (default false). */
  excludeBos?: boolean;
  /** Ignore attention of each position to itself (default false). */
  excludeCurrentToken?: boolean;
  /** How a pattern is compared with the detection pattern (default `"mul"`). */
  errorMeasure?: ErrorMeasure;
}

const HEAD_NAMES: HeadName[] = ["previous_token_head", "duplicate_token_head", "induction_head"];

/**
 * The detection pattern [pos, pos] of a head kind on one sequence of token ids (TransformerLens's
 * `get_*_detection_pattern`): a previous-token head attends from each position to the one before;
 * a duplicate-token head to earlier positions holding the same token; an induction head to the
 * position after each earlier occurrence of the current token.
 *
 * @example
 * ```ts
 * import { detectionPattern } from "./head_detector.ts";
 * const p = detectionPattern("induction_head", [7, 1, 2, 1, 2]);
 * p.data[3 * 5 + 2]; // 1: position 3 (token 1) attends to 2, after the earlier 1
 * ```
 */
export function detectionPattern(kind: HeadName, tokens: readonly number[]): Tensor {
  const n = tokens.length;
  const out = new Float32Array(n * n);
  for (let q = 0; q < n; q++) {
    for (let k = 0; k <= q; k++) {
      let v = 0;
      if (kind === "previous_token_head") v = k === q - 1 ? 1 : 0;
      else if (kind === "duplicate_token_head") v = k < q && tokens[k] === tokens[q] ? 1 : 0;
      else if (kind === "induction_head") v = k > 0 && tokens[k - 1] === tokens[q] ? 1 : 0;
      else {throw new InputError(
          `unknown head kind "${kind}"; expected one of ${HEAD_NAMES.join(", ")} or a pattern`,
        );}
      out[q * n + k] = v;
    }
  }
  return { data: out, shape: [n, n] };
}

/**
 * How much each head behaves like a kind of head, [n_layers, n_heads] (TransformerLens's
 * `detect_head`). `seqs` are token ids (one sequence `number[]`, or several `number[][]`) or
 * text (a string or strings, tokenized with BOS). The detection pattern is a head kind (see
 * {@link detectionPattern}; with several sequences the scores are averaged) or a lower-triangular
 * [pos, pos] tensor of your own (one sequence). Scores: `"mul"` is the share of the head's
 * attention (after the exclusions) that falls on the pattern's entries; `"abs"` is 1 minus the
 * mean absolute difference per query row, rounded to 3 decimals as TransformerLens does.
 *
 * @example
 * ```ts
 * import { detectHead, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const seq = [2047, 5, 9, 13, 21, 5, 9, 13, 21];
 * const scores = await detectHead(model, seq, "induction_head");
 * scores.shape; // [3, 4]; the toy's induction head, layer 1 head 2, scores highest
 * ```
 */
export async function detectHead(
  model: HookedTransformer,
  seqs: string | string[] | number[] | number[][],
  pattern: HeadName | Tensor,
  opts: DetectHeadOptions = {},
): Promise<Tensor> {
  checkOptions(
    opts,
    ["heads", "cache", "excludeBos", "excludeCurrentToken", "errorMeasure"],
    "detectHead",
  );
  const measure = opts.errorMeasure ?? "mul";
  if (measure !== "mul" && measure !== "abs") {
    throw new InputError(
      `detectHead: errorMeasure must be "mul" or "abs", got ${JSON.stringify(measure)}`,
    );
  }
  const sequences = toSequences(model, seqs);
  if (typeof pattern === "string") {
    if (!HEAD_NAMES.includes(pattern)) {
      throw new InputError(
        `detectHead: unknown head kind "${pattern}"; expected one of ${
          HEAD_NAMES.join(", ")
        } or a pattern tensor`,
      );
    }
  } else if (sequences.length !== 1) {
    throw new InputError("detectHead: a pattern tensor of your own goes with one sequence");
  }
  if (opts.cache && sequences.length !== 1) {
    throw new InputError("detectHead: a cache goes with one sequence");
  }
  const { nLayers: L, nHeads: H, nCtx } = model.cfg;
  const selected = new Set<string>();
  for (const pair of opts.heads ?? []) {
    const [l, h] = pair;
    if (!Number.isInteger(l) || l < 0 || l >= L || !Number.isInteger(h) || h < 0 || h >= H) {
      throw new InputError(`detectHead: head [${pair}] is outside [${L}, ${H}]`);
    }
    selected.add(`${l},${h}`);
  }
  const total = new Float64Array(L * H);
  for (const seq of sequences) {
    const n = seq.length;
    if (n < 2 || n >= nCtx) {
      throw new InputError(`detectHead: a sequence must have 2 to ${nCtx - 1} tokens, got ${n}`);
    }
    const det = typeof pattern === "string"
      ? detectionPattern(pattern, seq)
      : checkPattern(pattern, n);
    const names = Array.from({ length: L }, (_, l) => getActName("pattern", l));
    const cache = opts.cache ??
      (await model.runWithCache([seq], { namesFilter: names, returnType: "none" })).cache;
    for (let l = 0; l < L; l++) {
      // [1, head, q, k], or [head, q, k] after removeBatchDim.
      const p = cache.get(names[l]);
      const [b, ...rest] = p.shape.length === 4 ? p.shape : [1, ...p.shape];
      if (b !== 1 || rest.join() !== [H, n, n].join()) {
        throw new InputError(
          `detectHead: the cache's pattern has shape [${p.shape}], not that of one sequence of ${n} tokens`,
        );
      }
      for (let h = 0; h < H; h++) {
        const att = p.data.subarray(h * n * n, (h + 1) * n * n);
        total[l * H + h] += headScore(att, det.data, n, opts, measure) / sequences.length;
      }
    }
  }
  const out = Float32Array.from(total);
  if (opts.heads) {
    out.forEach((_, i) => !selected.has(`${Math.floor(i / H)},${i % H}`) && (out[i] = -1));
  }
  return { data: out, shape: [L, H] };
}

/** One head's score against the detection pattern (TL's `compute_head_attention_similarity_score`). */
function headScore(
  att: Float32Array,
  det: Float32Array,
  n: number,
  opts: DetectHeadOptions,
  measure: ErrorMeasure,
): number {
  const skip = (q: number, k: number) =>
    (opts.excludeBos && k === 0) || (opts.excludeCurrentToken && q === k);
  if (measure === "mul") {
    let hit = 0, all = 0;
    for (let q = 0; q < n; q++) {
      for (let k = 0; k < n; k++) {
        if (skip(q, k)) continue;
        const a = att[q * n + k];
        hit += a * det[q * n + k];
        all += a;
      }
    }
    return hit / all;
  }
  let err = 0;
  for (let q = 0; q < n; q++) {
    for (let k = 0; k < n; k++) if (!skip(q, k)) err += Math.abs(att[q * n + k] - det[q * n + k]);
  }
  // TL: 1 - round(mean(|diff|) * size, 3), the mean over all n x n entries.
  return 1 - Math.round((err / (n * n)) * n * 1000) / 1000;
}

function checkPattern(p: Tensor, n: number): Tensor {
  if (
    !p || !(p.data instanceof Float32Array) || p.shape?.length !== 2 || p.shape[0] !== n ||
    p.shape[1] !== n
  ) {
    throw new InputError(
      `detectHead: the detection pattern must be a [${n}, ${n}] tensor (the sequence length)`,
    );
  }
  for (let q = 0; q < n; q++) {
    for (let k = q + 1; k < n; k++) {
      if (p.data[q * n + k] !== 0) {
        throw new InputError(
          `detectHead: the detection pattern must be lower triangular (entry [${q}, ${k}] is not 0)`,
        );
      }
    }
  }
  return p;
}

function toSequences(
  model: HookedTransformer,
  seqs: string | string[] | number[] | number[][],
): number[][] {
  if (typeof seqs === "string") return model.toTokens(seqs);
  if (!Array.isArray(seqs) || seqs.length === 0) {
    throw new InputError("detectHead: give a sequence of token ids, several, or text");
  }
  if (seqs.every((s) => typeof s === "string")) {
    return (seqs as string[]).map((s) => model.toTokens(s)[0]);
  }
  if (seqs.every((s) => typeof s === "number")) return [seqs as number[]];
  if (seqs.every((s) => Array.isArray(s))) return seqs as number[][];
  throw new InputError("detectHead: sequences must be all token-id arrays or all strings");
}
