/**
 * The study's activation-patching sweep on repeated tokens: for each layer and each position of
 * the repeated half, patch one residual-stream activation with the clean value from one period
 * earlier and measure how the loss on the repeated half moves.
 * @module
 */
import { InputError } from "../core/errors.ts";
import { getActName } from "../model/hook_table.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { PATCH_POINTS, patchedNextTokenLogProbs, type PatchPoint } from "../model/patching.ts";
import { type Tokens, toTokenTensor } from "../model/tokens.ts";
import type { ProgressCallback } from "../core/progress.ts";
import { repeatedShape } from "./repeated_tokens.ts";

/**
 * Which positions are patched, and from where (see {@link patchingScores}).
 *
 * @example
 * ```ts ignore
 * const alignment: PatchAlignment = "aligned";
 * ```
 */
export type PatchAlignment = "study" | "aligned";

/**
 * Options of {@link patchingScores}.
 *
 * @example
 * ```ts ignore
 * await patchingScores(model, tokens, 50, { hook: "attn_out", alignment: "study" });
 * ```
 */
export interface PatchingOptions {
  /** The activation patched (default `"mlp_out"`, as in the study). */
  hook?: PatchPoint;
  /**
   * `"study"` (default): p in [seqLen, 2 seqLen) takes the clean value at p - seqLen, so the first
   * column patches with BOS's activation. `"aligned"`: p in [seqLen + 1, 2 seqLen] takes the
   * value at p - seqLen, the same token's first occurrence.
   */
  alignment?: PatchAlignment;
  /** Called after each layer: `(layersDone, nLayers)`. */
  onProgress?: ProgressCallback;
}

/**
 * The positions {@link patchingScores} patches: column j patches `targets[j]` from `sources[j]`.
 *
 * @example
 * ```ts ignore
 * const { targets, sources } = patchPositions(50, "study"); // targets[0] 50, sources[0] 0
 * ```
 */
export interface PatchPositions {
  /** Patched positions, one per column. */
  targets: number[];
  /** Where each patched value comes from in the clean run (targets[j] - seqLen). */
  sources: number[];
}

/**
 * The patched and source positions of each column of {@link patchingScores}.
 *
 * @example
 * ```ts
 * import { patchPositions } from "./patching.ts";
 * patchPositions(3, "study"); // { targets: [3, 4, 5], sources: [0, 1, 2] }
 * patchPositions(3, "aligned"); // { targets: [4, 5, 6], sources: [1, 2, 3] }
 * ```
 */
export function patchPositions(seqLen: number, alignment: PatchAlignment): PatchPositions {
  if (alignment !== "study" && alignment !== "aligned") {
    throw new InputError(`alignment must be "study" or "aligned", got ${alignment}`);
  }
  const first = alignment === "study" ? seqLen : seqLen + 1;
  const targets = Array.from({ length: seqLen }, (_, j) => first + j);
  return { targets, sources: targets.map((p) => p - seqLen) };
}

/** Mean of -lp[from..]. */
function lossFrom(lp: Float32Array, from: number): number {
  let s = 0;
  for (let t = from; t < lp.length; t++) s -= lp[t];
  return s / (lp.length - from);
}

/**
 * What a sweep over repeated tokens patches (shared by {@link patchingScores} and its
 * attribution-patching estimate): the hook point (checked), the patched positions and their
 * sources, the first sequence [1, T], and the hook point's name in each layer.
 * @internal
 */
export function planSweep(
  model: HookedTransformer,
  tokens: Tokens,
  seqLen: number,
  opts: Pick<PatchingOptions, "hook" | "alignment">,
): {
  hook: PatchPoint;
  targets: number[];
  sources: number[];
  one: { data: Int32Array; shape: number[] };
  names: string[];
} {
  const hook = opts.hook ?? "mlp_out";
  if (!PATCH_POINTS.includes(hook)) {
    throw new InputError(`hook must be one of ${PATCH_POINTS.join(", ")}; got ${hook}`);
  }
  const { targets, sources } = patchPositions(seqLen, opts.alignment ?? "study");
  const all = toTokenTensor(tokens, model.cfg);
  const [, T] = repeatedShape(all, seqLen);
  const one = { data: all.data.slice(0, T), shape: [1, T] };
  const names = Array.from({ length: model.cfg.nLayers }, (_, l) => getActName(hook, l));
  return { hook, targets, sources, one, names };
}

/**
 * Activation patching on repeated tokens, as the study does it: batch 1; for each layer l and
 * each column j, replace `blocks.{l}.hook_{hook}` at position p = targets[j] (batch 0) with the
 * clean run's value at p - seqLen, and score loss(patched) - loss(clean), loss = mean of
 * -lp[seqLen:] (the repeated half's next-token losses). Returns `[nLayers][seqLen]`.
 * With tokens of batch > 1, only the first sequence is used.
 *
 * Only what a patch can change is recomputed: each patched run resumes from the clean residual
 * stream at the patched layer, from the patched position on, reusing the clean keys and values of
 * earlier positions, and unembeds only positions t >= max(p, seqLen); one layer's runs are
 * batched together. Results equal the naive loop (a full `runWithHooks` per patch) to ~1e-6.
 *
 * @example
 * ```ts ignore
 * import { generateRepeatedTokens, HookedTransformer, patchingScores } from "./mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy");
 * const tokens = generateRepeatedTokens(model, 50, 1, { seed: 0 });
 * const scores = await patchingScores(model, tokens, 50, {
 *   hook: "mlp_out",
 *   alignment: "study",
 *   onProgress: (done, total) => console.log(`${done}/${total} layers`),
 * });
 * scores[0][0]; // loss change when layer 0's MLP output at position 50 takes BOS's value
 * ```
 */
export async function patchingScores(
  model: HookedTransformer,
  tokens: Tokens,
  seqLen: number,
  opts: PatchingOptions = {},
): Promise<number[][]> {
  const { hook, targets, sources, one, names } = planSweep(model, tokens, seqLen, opts);
  const L = model.cfg.nLayers;
  const d = model.cfg.dModel;
  const { cache } = await model.runWithCache(one, { namesFilter: names, returnType: "none" });
  const groups = names.map((name, l) => {
    const act = cache.get(name).data;
    const patches = targets.map((p, j) => ({
      position: p,
      value: act.slice(sources[j] * d, (sources[j] + 1) * d),
    }));
    return { layer: l, point: hook, patches };
  });
  opts.onProgress?.(0, L);
  const { clean, patched } = await patchedNextTokenLogProbs(model, one, groups, {
    from: seqLen,
    onGroup: opts.onProgress,
  });
  const base = lossFrom(clean, seqLen);
  const scores = patched.map((runs) => runs.map((lp) => lossFrom(lp, seqLen) - base));
  return scores;
}
