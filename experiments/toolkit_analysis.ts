/**
 * The report's second worked analysis, written with the public API only (`mod.ts`), as a
 * TransformerLens user would write it: direct logit attribution (which heads and MLPs write the
 * correct next token on the repeated half) and a logit lens of the residual stream (what each
 * layer's stream would predict). It shows the toolkit composes: a cache, its decompositions,
 * `logitAttrs`, `accumulatedResid` and the tensor operations.
 * @module
 */
import {
  add,
  argmax,
  eq,
  type HookedTransformer,
  index,
  logSoftmax,
  matmul,
  mean,
  reshape,
  sum,
  type Tensor,
} from "../mod.ts";

/** What {@link toolkitAnalysis} finds (stored in results.json as `toolkit`). */
export interface ToolkitAnalysis {
  /** Sequences of the batch analysed (the first ones). */
  batch: number;
  /** Positions t whose prediction of token t + 1 the attributions average: [start, stop). */
  positions: [number, number];
  /** Direct logit attribution to the correct next token, mean over batch and positions. */
  dla: {
    /** `decomposeResid` components: embed, pos_embed, each layer's attn_out and mlp_out. */
    components: { label: string; attribution: number }[];
    /** Every head, [layer][head] (`stackHeadResults`). */
    heads: number[][];
    /** The heads with the largest attributions, largest first. */
    topHeads: { label: string; attribution: number }[];
    /** Max |sum of component attributions + b_U[answer] - logit[answer]| over the positions. */
    sumCheck: number;
  };
  /** Logit lens of `accumulatedResid` (final norm re-applied per layer), W_U + b_U on top. */
  logitLens: {
    /** `"0_pre"`, `"1_pre"`, ..., `"final_post"`. */
    labels: string[];
    /** Mean log-prob of the correct next token, first half (random tokens). */
    logProbFirst: number[];
    /** The same on the repeated half. */
    logProbSecond: number[];
    /** Top-1 accuracy, first half. */
    accuracyFirst: number[];
    /** Top-1 accuracy, repeated half. */
    accuracySecond: number[];
  };
}

/** Mean over every value. */
function meanAll(t: Tensor): number {
  return mean(t).data[0];
}

/**
 * Direct logit attribution and a logit lens on repeated tokens `[BOS] + r + r` (rows of
 * `1 + 2 seqLen` ids), on the first `maxBatch` sequences.
 *
 * @example
 * ```ts
 * import { generateRepeatedTokens, HookedTransformer } from "../mod.ts";
 * import { toolkitAnalysis } from "./toolkit_analysis.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const tokens = generateRepeatedTokens(model, 10, 2, { seed: 0 });
 * const { dla, logitLens } = await toolkitAnalysis(model, tokens, 10);
 * dla.topHeads[0].label; // the head that writes the answer most
 * logitLens.accuracySecond; // top-1 on the repeat, layer by layer
 * ```
 */
export async function toolkitAnalysis(
  model: HookedTransformer,
  tokens: { data: Int32Array; shape: number[] },
  seqLen: number,
  maxBatch = 4,
): Promise<ToolkitAnalysis> {
  const T = tokens.shape[1];
  const B = Math.min(maxBatch, tokens.shape[0]);
  const rows = Array.from(
    { length: B },
    (_, b) => Array.from(tokens.data.subarray(b * T, (b + 1) * T)),
  );
  const { nLayers: L, nHeads: H, dModel: d } = model.cfg;
  const keep = [
    "hook_embed",
    "hook_pos_embed",
    "hook_attn_out",
    "hook_mlp_out",
    "attn.hook_z",
    "hook_resid_pre",
    "hook_resid_post",
    "ln_final.hook_scale",
  ];
  const { logits, cache } = await model.runWithCache(rows, {
    namesFilter: (n) => keep.some((k) => n.endsWith(k)),
  });

  // Direct logit attribution over the repeated half: position t predicts token t + 1.
  const posSlice = { start: seqLen, stop: 2 * seqLen };
  const answers = rows.map((r) => r.slice(seqLen + 1, 2 * seqLen + 1));
  const [parts, labels] = cache.decomposeResid({ posSlice, returnLabels: true });
  const partAttrs = cache.logitAttrs(parts, answers, { posSlice }); // [components, batch, pos]
  const components = labels.map((label, c) => ({
    label,
    attribution: meanAll(index(partAttrs, c)),
  }));
  const [heads, headLabels] = cache.stackHeadResults({ posSlice, returnLabels: true });
  const headAttrs = mean(cache.logitAttrs(heads, answers, { posSlice }), [1, 2]); // [L * H]
  const grid = Array.from(
    { length: L },
    (_, l) => Array.from(headAttrs.data.subarray(l * H, (l + 1) * H)),
  );
  const topHeads = headLabels
    .map((label, i) => ({ label, attribution: headAttrs.data[i] }))
    .sort((a, b) => b.attribution - a.attribution)
    .slice(0, 8);

  // The components sum to the stream, so their attributions plus b_U are the logits.
  const total = sum(partAttrs, 0); // [batch, pos]
  let sumCheck = 0;
  const V = model.cfg.dVocab;
  answers.forEach((ans, b) =>
    ans.forEach((a, i) => {
      const t = seqLen + i;
      const logit = logits!.data[(b * T + t) * V + a];
      sumCheck = Math.max(
        sumCheck,
        Math.abs(total.data[b * seqLen + i] + model.b_U.data[a] - logit),
      );
    })
  );

  // Logit lens: each layer's stream through the final norm and the unembedding, both halves.
  const both = { start: 0, stop: 2 * seqLen };
  const [resid, lensLabels] = cache.accumulatedResid({
    applyLn: true,
    posSlice: both,
    returnLabels: true,
  });
  const next = rows.map((r) => r.slice(1, 2 * seqLen + 1)).flat();
  const lens = {
    labels: lensLabels,
    logProbFirst: [] as number[],
    logProbSecond: [] as number[],
    accuracyFirst: [] as number[],
    accuracySecond: [] as number[],
  };
  for (let c = 0; c < lensLabels.length; c++) {
    const x = reshape(index(resid, c), [B * 2 * seqLen, d]);
    const lp = logSoftmax(add(matmul(x, model.W_U, model.backend), model.b_U)); // [rows, V]
    const picked = next.map((tok, r) => lp.data[r * V + tok]);
    const hit = eq(argmax(lp, -1), { data: Float32Array.from(next), shape: [next.length] }).data;
    const half = (values: ArrayLike<number>, second: boolean) => {
      let s = 0, n = 0;
      for (let r = 0; r < next.length; r++) {
        if ((r % (2 * seqLen) >= seqLen) === second) {
          s += values[r];
          n++;
        }
      }
      return s / n;
    };
    lens.logProbFirst.push(half(picked, false));
    lens.logProbSecond.push(half(picked, true));
    lens.accuracyFirst.push(half(hit, false));
    lens.accuracySecond.push(half(hit, true));
  }
  return {
    batch: B,
    positions: [seqLen, 2 * seqLen],
    dla: { components, heads: grid, topHeads, sumCheck },
    logitLens: lens,
  };
}
