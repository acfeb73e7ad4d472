/**
 * Next-token log-probabilities and top-1 hits computed inside the backend, chunk of logits by
 * chunk: log-sum-exp and argmax of each logit row are reduced where the logits are, so no
 * `[batch, pos, d_vocab]` tensor is ever held (609 MB for GPT-2 small on 30 x 101 tokens).
 * @module
 */
import type { Backend, DeviceArray } from "../backend/backend.ts";
import { checkOptions } from "../core/options.ts";
import { ActivationCache } from "./activation_cache.ts";
import { forward } from "./forward.ts";
import { type HookedTransformer, hookSessionOf, runtimeOf } from "./hooked_transformer.ts";
import { assertHookName } from "./hook_table.ts";
import { targetLogProbs } from "./loss.ts";
import { exclusiveUse } from "./exclusive.ts";
import { type Tokens, toTokenTensor } from "./tokens.ts";

/**
 * An unembedding callback (see `ForwardPlan.unembed`) that writes, for unembedded row i,
 * `logProbs[i] = log softmax(logits_i)[targets[i]]` and, when `correct` is given,
 * `correct[i] = 1` when `targets[i]` is the row's argmax (the first maximum, as torch).
 */
export function logProbReducer(
  backend: Backend,
  dVocab: number,
  targets: Int32Array,
  logProbs: Float32Array,
  correct?: Uint8Array,
): (first: number, count: number, logits: DeviceArray) => Promise<void> {
  return async (first, count, logits) => {
    const want = targets.subarray(first, first + count);
    // Every read of the chunk is issued before the first await.
    const [lp, best] = await Promise.all([
      targetLogProbs(backend, logits, count, dVocab, want),
      correct ? backend.argmaxRows(logits, count, dVocab) : undefined,
    ]);
    logProbs.set(lp, first);
    if (correct && best) {
      for (let i = 0; i < count; i++) correct[first + i] = best[i] === want[i] ? 1 : 0;
    }
  };
}

/** Options of {@link nextTokenLogProbs}. */
export interface NextTokenOptions {
  /** Also report whether each position's argmax is the next token (default false). */
  accuracy?: boolean;
  /** Hook points to cache in each group of sequences (full names), handed to `onGroup`. */
  cacheNames?: string[];
  /**
   * Called after each group of sequences with the group's cache, its first sequence and its size
   * (the cache is dropped afterwards, so memory holds one group's activations).
   */
  onGroup?: (cache: ActivationCache, firstSequence: number, sequences: number) => void;
  /** Rows (sequences x positions) run at once (default 1024); bounds activation memory. */
  rowBudget?: number;
}

/** What {@link nextTokenLogProbs} returns. */
export interface NextTokenLogProbs {
  /** [batch, pos - 1]: log p(tokens[b, t + 1] | tokens[b, ..t]). */
  logProbs: Float32Array;
  /** [batch, pos - 1]: 1 where the argmax at t was tokens[b, t + 1] (with `accuracy`). */
  correct?: Uint8Array;
  /** `[batch, pos - 1]`. */
  shape: [number, number];
}

/**
 * Next-token log-probs (TransformerLens's per-token loss, negated) of every position but the last,
 * with optional top-1 hits and per-group caches, from one forward pass per group of sequences.
 * Values equal a float64 log-softmax of `model.run`'s logits to ~1e-6.
 *
 * @example
 * ```ts
 * import { HookedTransformer, nextTokenLogProbs } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { logProbs, shape } = await nextTokenLogProbs(model, [[2047, 5, 9, 5, 9]]);
 * shape; // [1, 4]
 * logProbs[3]; // log p(9 | BOS 5 9 5): high, the toy model has induction heads
 * ```
 */
export async function nextTokenLogProbs(
  model: HookedTransformer,
  tokens: Tokens,
  opts: NextTokenOptions = {},
): Promise<NextTokenLogProbs> {
  checkOptions(opts, ["accuracy", "cacheNames", "onGroup", "rowBudget"], "nextTokenLogProbs");
  const m = runtimeOf(model);
  using _turn = await exclusiveUse(m.backend);
  const t = toTokenTensor(tokens, m.cfg);
  const [batch, T] = t.shape;
  const n = T - 1;
  const logProbs = new Float32Array(batch * n);
  const correct = opts.accuracy ? new Uint8Array(batch * n) : undefined;
  const group = Math.max(1, Math.floor((opts.rowBudget ?? 1024) / T));
  const cacheNames = new Set(opts.cacheNames ?? []);
  const known = new Set(model.hookNames);
  for (const name of cacheNames) assertHookName(name, known, m.cfg);
  for (let b0 = 0; b0 < batch; b0 += group) {
    const g = Math.min(group, batch - b0);
    const ids = t.data.subarray(b0 * T, (b0 + g) * T);
    // Unembed every position but each sequence's last; row j predicts the token after it.
    const rows = new Int32Array(g * n);
    const targets = new Int32Array(g * n);
    for (let s = 0; s < g; s++) {
      for (let p = 0; p < n; p++) {
        rows[s * n + p] = s * T + p;
        targets[s * n + p] = ids[s * T + p + 1];
      }
    }
    // The model's registered hooks (addHook, hooks) run here as in every pass.
    const session = hookSessionOf(model, [], cacheNames);
    const lp = logProbs.subarray(b0 * n, (b0 + g) * n);
    const hits = correct?.subarray(b0 * n, (b0 + g) * n);
    await forward(m, {
      batch: g,
      T,
      tokens: { data: ids, shape: [g, T] },
      unembed: { rows, each: logProbReducer(m.backend, m.cfg.dVocab, targets, lp, hits) },
    }, session);
    opts.onGroup?.(new ActivationCache(session.cached, model), b0, g);
  }
  return { logProbs, correct, shape: [batch, n] };
}
