/**
 * Next-token log-probabilities and accuracy on repeated tokens (the study's first step), from
 * `nextTokenLogProbs`, which reduces each chunk of logits on the backend: no `[batch, pos,
 * d_vocab]` logits tensor is ever held (609 MB for GPT-2 small on 30 x 101 tokens).
 * @module
 */
import { getActName } from "../model/hook_table.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { nextTokenLogProbs } from "../model/next_token.ts";
import { type Tokens, toTokenTensor } from "../model/tokens.ts";
import { addScores, emptyScores, type HeadScores } from "./head_scores.ts";
import { repeatedShape } from "./repeated_tokens.ts";

/**
 * What {@link logProbSummary} returns (the definitions of docs/semantics.md, section 4).
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

/**
 * Per-token log-probs of the correct next token and top-1 accuracy on repeated tokens
 * `[BOS] + r + r` of shape `[batch, 1 + 2 seqLen]`. Position t predicts token t + 1; the first
 * half is t < seqLen (the random tokens, unpredictable), the second t >= seqLen (the repeat, which
 * induction heads predict). Argmax takes the first maximum, as torch does.
 *
 * Sequences go through the model in groups of about 1024 rows; each group's logits are made 64
 * rows at a time and reduced on the backend (`nextTokenLogProbs`), so memory holds one group's
 * activations and one 64-row logit chunk. Values equal a float64 log-softmax of `model.run`'s logits to ~1e-6.
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
  const t = toTokenTensor(tokens, model.cfg);
  const [batch, T] = repeatedShape(t, seqLen);
  const n = T - 1;
  const names = Array.from({ length: model.cfg.nLayers }, (_, l) => getActName("pattern", l));
  // Head scores: each group's diagonal means, weighted by its share of the batch.
  const scores = withScores ? emptyScores(model.cfg.nLayers, model.cfg.nHeads) : undefined;
  const { logProbs, correct } = await nextTokenLogProbs(model, t, {
    accuracy: true,
    cacheNames: withScores ? names : [],
    onGroup: (cache, _b0, g) => {
      if (scores) {
        names.forEach((name, l) => addScores(scores, l, cache.get(name), seqLen, g / batch));
      }
    },
  });

  const perPosition = new Array<number>(n).fill(0);
  let first = 0, second = 0, accFirst = 0, accSecond = 0;
  const rows: number[][] = [];
  for (let b = 0; b < batch; b++) {
    rows.push(Array.from(logProbs.subarray(b * n, (b + 1) * n)));
    for (let pos = 0; pos < n; pos++) {
      const v = logProbs[b * n + pos];
      perPosition[pos] += v;
      if (pos < seqLen) {
        first += v;
        accFirst += correct![b * n + pos];
      } else {
        second += v;
        accSecond += correct![b * n + pos];
      }
    }
  }
  const half = batch * seqLen;
  for (let pos = 0; pos < n; pos++) perPosition[pos] /= batch;
  const summary = {
    logProbs: rows,
    firstHalf: first / half,
    secondHalf: second / half,
    accuracyFirst: accFirst / half,
    accuracySecond: accSecond / half,
    perPosition,
  };
  return { summary, scores };
}
