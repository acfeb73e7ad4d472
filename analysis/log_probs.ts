/**
 * Next-token log-probabilities and accuracy on repeated tokens (the study's first step), computed
 * from the forward pass in chunks of rows: log-sum-exp and argmax of each logit row run inside
 * WebAssembly, so no `[batch, pos, d_vocab]` logits tensor is ever held (609 MB for GPT-2 small on
 * 30 x 101 tokens).
 * @module
 */
import { fullPlan } from "../model/forward.ts";
import { getActName } from "../model/hook_points.ts";
import { HookSession } from "../model/hooks.ts";
import { diagonalMean, type HeadScores } from "./head_scores.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { type Tokens, toTokenTensor } from "../model/tokens.ts";
import { repeatedShape } from "./repeated_tokens.ts";

/**
 * What {@link logProbSummary} returns (GUIDE section 4's definitions).
 *
 * @example
 * ```ts ignore
 * const { secondHalf, perPosition } = await logProbSummary(model, tokens, 50);
 * ```
 */
export interface LogProbSummary {
  /** lp[b][t] = log softmax(logits[b, t])[tokens[b, t + 1]], t = 0..2 seqLen - 1. */
  logProbs: number[][];
  /** Mean of lp[:, :seqLen]. */
  firstHalf: number;
  /** Mean of lp[:, seqLen:]. */
  secondHalf: number;
  /** Fraction of (b, t < seqLen) with argmax(logits[b, t]) == tokens[b, t + 1]. */
  accuracyFirst: number;
  /** The same for t >= seqLen. */
  accuracySecond: number;
  /** Mean over the batch of lp[:, t], t = 0..2 seqLen - 1. */
  perPosition: number[];
}

/** Rows (sequences x positions) run through the model at once; bounds activation memory. */
const ROW_BUDGET = 1024;

/**
 * Per-token log-probs of the correct next token and top-1 accuracy on repeated tokens
 * `[BOS] + r + r` of shape `[batch, 1 + 2 seqLen]`. Position t predicts token t + 1; the first
 * half is t < seqLen (the random tokens, unpredictable), the second t >= seqLen (the repeat, which
 * induction heads predict). Argmax takes the first maximum, as torch does.
 *
 * Sequences go through the model in groups of about 1024 rows; each group's logits are made 64
 * rows at a time and reduced inside WebAssembly, so memory holds one group's activations and one
 * 64-row logit chunk. Values equal a float64 log-softmax of `model.run`'s logits to ~1e-6.
 *
 * @example
 * ```ts ignore
 * import { generateRepeatedTokens, HookedTransformer, logProbSummary } from "./mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy");
 * const tokens = generateRepeatedTokens(model, 50, 30, { seed: 0 });
 * const s = await logProbSummary(model, tokens, 50);
 * console.log(s.firstHalf, s.secondHalf, s.accuracySecond); // about -7.6, -0.74, 0.92
 * ```
 */
export async function logProbSummary(
  model: HookedTransformer,
  tokens: Tokens,
  seqLen: number,
): Promise<LogProbSummary> {
  return (await repeatedTokenPass(model, tokens, seqLen, false)).summary;
}

/**
 * {@link logProbSummary} and {@link headScores} from ONE forward pass (the patterns are cached
 * group by group while the log-probs are computed), as the study's first step does in
 * TransformerLens: half the work of calling both.
 *
 * @example
 * ```ts ignore
 * const { summary, scores } = await logProbsAndHeadScores(model, tokens, 50);
 * summary.secondHalf; scores.induction[1][2];
 * ```
 */
export async function logProbsAndHeadScores(
  model: HookedTransformer,
  tokens: Tokens,
  seqLen: number,
): Promise<{ summary: LogProbSummary; scores: HeadScores }> {
  const { summary, scores } = await repeatedTokenPass(model, tokens, seqLen, true);
  return { summary, scores: scores! };
}

async function repeatedTokenPass(
  model: HookedTransformer,
  tokens: Tokens,
  seqLen: number,
  withScores: boolean,
): Promise<{ summary: LogProbSummary; scores?: HeadScores }> {
  await Promise.resolve();
  const t = toTokenTensor(tokens, model.cfg);
  const [batch, T] = repeatedShape(t, seqLen);
  const engine = model.engine;
  const { k, cfg } = engine;
  const d = cfg.dModel;
  const V = cfg.dVocab;
  const n = T - 1;
  const logProbs = Array.from({ length: batch }, () => new Array<number>(n).fill(0));
  const correct = new Uint8Array(batch * n);
  const group = Math.max(1, Math.floor(ROW_BUDGET / T));
  const names = Array.from({ length: cfg.nLayers }, (_, l) => getActName("pattern", l));
  // Head scores: each group's diagonal means, weighted by its share of the batch.
  const scores: HeadScores | undefined = withScores
    ? {
      induction: names.map(() => new Array<number>(cfg.nHeads).fill(0)),
      previousToken: names.map(() => new Array<number>(cfg.nHeads).fill(0)),
      duplicateToken: names.map(() => new Array<number>(cfg.nHeads).fill(0)),
    }
    : undefined;
  for (let b0 = 0; b0 < batch; b0 += group) {
    const g = Math.min(group, batch - b0);
    const ids = t.data.subarray(b0 * T, (b0 + g) * T);
    const mark = k.mark();
    try {
      const session = new HookSession(k, new Map(), new Set(withScores ? names : []));
      const { pass, buf } = engine.pass(fullPlan(g, T), withScores, session);
      engine.embed({ data: ids, shape: [g, T] }, buf.x, buf.z, engine.silent);
      k.add(buf.x, buf.z, buf.resid, g * T * d);
      for (let l = 0; l < cfg.nLayers; l++) pass.block(l);
      if (scores) {
        names.forEach((name, l) => {
          const p = session.cached.get(name)!;
          const add = (into: number[], offset: number) =>
            diagonalMean(p, offset).forEach((v, h) => into[h] += v * g / batch);
          add(scores.induction[l], 1 - seqLen);
          add(scores.previousToken[l], -1);
          add(scores.duplicateToken[l], -seqLen);
        });
        session.cached.clear();
      }
      pass.finalLayerNorm();
      const chunk = k.alloc(engine.logitChunkRows * V);
      engine.unembed(buf.x, g * T, chunk, (r0, m) => {
        const lse = k.logSumExpRows(chunk, m, V);
        const best = k.argmaxRows(chunk, m, V);
        const logits = k.view(chunk, m * V);
        for (let i = 0; i < m; i++) {
          const row = r0 + i;
          const pos = row % T;
          if (pos === n) continue; // the last position has no next token
          const b = b0 + Math.floor(row / T);
          const target = ids[row + 1];
          logProbs[b][pos] = logits[i * V + target] - lse[i];
          correct[b * n + pos] = best[i] === target ? 1 : 0;
        }
      });
    } finally {
      k.release(mark);
    }
  }

  const perPosition = new Array<number>(n).fill(0);
  let first = 0, second = 0, accFirst = 0, accSecond = 0;
  for (let b = 0; b < batch; b++) {
    for (let pos = 0; pos < n; pos++) {
      const v = logProbs[b][pos];
      perPosition[pos] += v;
      if (pos < seqLen) {
        first += v;
        accFirst += correct[b * n + pos];
      } else {
        second += v;
        accSecond += correct[b * n + pos];
      }
    }
  }
  const half = batch * seqLen;
  for (let pos = 0; pos < n; pos++) perPosition[pos] /= batch;
  const summary = {
    logProbs,
    firstHalf: first / half,
    secondHalf: second / half,
    accuracyFirst: accFirst / half,
    accuracySecond: accSecond / half,
    perPosition,
  };
  return { summary, scores };
}
