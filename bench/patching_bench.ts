/**
 * Activation patching (TransformerLens's `patching` module) on the GPT-2-small-shape bench model:
 * this library's resumed, batched patched runs against the naive loop TransformerLens runs (one
 * full `runWithHooks` per patch), on a corrupted prompt of {@link PATCH_SEQ} tokens with a
 * logit-difference metric at the last position: ours with every position's logits (as TL) and
 * with `logitPositions: [-1]` (the metric reads only the last position). The naive loop's cost is
 * the same for every patch (a full forward), so it is timed on a sample of patches and scaled to
 * the grid; the sample also checks that both give the same numbers.
 * @module
 */
import {
  getActPatchAttnHeadOutAllPos,
  getActPatchAttnHeadOutByPos,
  getActPatchResidPre,
  type HookedTransformer,
  type Tensor,
} from "../mod.ts";

/** Positions of the patched prompt (an IOI-style prompt's length). */
export const PATCH_SEQ = 20;
/** Naive runs timed per grid. */
const NAIVE_SAMPLE = 12;

/** One grid's timings. */
export interface PatchGridResult {
  /** Patched runs in the grid. */
  runs: number;
  /** Seconds for the whole grid with this library's patching functions, all logits (skipped: null). */
  ours: number | null;
  /** The same with `logitPositions: [-1]`. */
  oursLastPosition: number;
  /** Seconds per naive run (a full `runWithHooks`), median of the sample. */
  naivePerRun: number;
  /** naivePerRun x runs. */
  naiveEstimate: number;
  /** Max |ours - naive| of the metric over the sampled patches. */
  maxDiff: number;
}

/** Times the resid_pre, head-output-all-positions and head-output-by-position grids. */
export async function patchingBench(
  model: HookedTransformer,
  tokens: number[],
): Promise<Record<string, PatchGridResult>> {
  const { nLayers: L, nHeads: H, dHead } = model.cfg;
  const clean = [tokens.slice(0, PATCH_SEQ)];
  const corrupted = [clean[0].map((t, i) => i === 3 || i === 7 ? (t + 1) % model.cfg.dVocab : t)];
  const [a, b] = [clean[0][PATCH_SEQ - 5], clean[0][PATCH_SEQ - 6]];
  const metric = (logits: Tensor) => {
    const [, T, V] = logits.shape;
    return logits.data[(T - 1) * V + a] - logits.data[(T - 1) * V + b];
  };
  const { cache } = await model.runWithCache(clean);
  const out: Record<string, PatchGridResult> = {};
  // The by-position head grid with every position's logits would take as long as the rest of the
  // bench together, so it runs with the last position's only.
  const grids = [
    ["resid_pre [L, pos]", getActPatchResidPre, [L, PATCH_SEQ], "resid_pre", true],
    ["z all pos [L, head]", getActPatchAttnHeadOutAllPos, [L, H], "z all", true],
    ["z by pos [L, pos, head]", getActPatchAttnHeadOutByPos, [L, PATCH_SEQ, H], "z pos", false],
  ] as const;
  for (const [name, f, shape, kind, allLogits] of grids) {
    let ours: number | null = null;
    if (allLogits) {
      const t0 = performance.now();
      await f(model, corrupted, cache, metric);
      ours = (performance.now() - t0) / 1000;
    }
    const t0 = performance.now();
    const grid = await f(model, corrupted, cache, metric, { logitPositions: [-1] });
    const oursLastPosition = (performance.now() - t0) / 1000;
    const runs = shape.reduce((x, y) => x * y, 1);
    const times: number[] = [];
    let maxDiff = 0;
    for (let s = 0; s < NAIVE_SAMPLE; s++) {
      const flat = Math.floor((s + 0.5) * runs / NAIVE_SAMPLE);
      const idx = shape.map((_, d) =>
        Math.floor(flat / shape.slice(d + 1).reduce((x, y) => x * y, 1)) % shape[d]
      );
      const layer = idx[0];
      const name2 = kind === "resid_pre"
        ? `blocks.${layer}.hook_resid_pre`
        : `blocks.${layer}.attn.hook_z`;
      const src = cache.get(name2).data;
      const width = kind === "resid_pre" ? model.cfg.dModel : H * dHead;
      const t = performance.now();
      const logits = await model.runWithHooks(corrupted, {
        fwdHooks: [[name2, (act) => {
          if (kind === "resid_pre") {
            act.data.set(src.subarray(idx[1] * width, (idx[1] + 1) * width), idx[1] * width);
          } else {
            const h = kind === "z all" ? idx[1] : idx[2];
            const positions = kind === "z all" ? [...Array(PATCH_SEQ).keys()] : [idx[1]];
            for (const p of positions) {
              const o = p * width + h * dHead;
              act.data.set(src.subarray(o, o + dHead), o);
            }
          }
        }]],
      });
      times.push((performance.now() - t) / 1000);
      maxDiff = Math.max(maxDiff, Math.abs(metric(logits!) - grid.data[flat]));
    }
    times.sort((x, y) => x - y);
    const naivePerRun = times[Math.floor(times.length / 2)];
    out[name] = {
      runs,
      ours,
      oursLastPosition,
      naivePerRun,
      naiveEstimate: naivePerRun * runs,
      maxDiff,
    };
  }
  return out;
}
