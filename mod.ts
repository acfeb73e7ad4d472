/**
 * TransformerLens for Deno: GPT-2-family models on WebAssembly SIMD kernels, with
 * TransformerLens's hook points for caching, reading and patching every activation, and the
 * analyses of "How to interpret GPT2-small".
 *
 * @example
 * ```ts ignore
 * import { getActName, HookedTransformer } from "./mod.ts";
 *
 * const model = await HookedTransformer.fromPretrained("induction-toy");
 * const tokens = [[model.cfg.bosTokenId, 5, 9, 13, 5, 9, 13]];
 * const { logits, cache } = await model.runWithCache(tokens);
 * cache.get("pattern", 1).shape; // [1, n_heads, 7, 7]
 * const patched = await model.runWithHooks(tokens, {
 *   fwdHooks: [[getActName("mlp_out", 0), (act) => { act.data.fill(0); }]],
 * });
 * ```
 * @module
 */

export { HookedTransformer } from "./model/hooked_transformer.ts";
export type {
  FromBytesOptions,
  FromPretrainedOptions,
  ReturnType,
  RunOptions,
  RunWithCacheOptions,
  RunWithHooksOptions,
} from "./model/hooked_transformer.ts";
export { ActivationCache } from "./model/activation_cache.ts";
export { getActName, hookNames } from "./model/hook_table.ts";
export type { HookOption, HookOptions } from "./model/hook_table.ts";
export type { BwdHook, FwdHook, HookContext, HookFilter, HookFn } from "./model/hooks.ts";
export { logitDiffMetric, logProbMetric, lossMetric } from "./model/metrics.ts";
export type { LossMetricOptions, Metric, MetricRun, PositionOptions } from "./model/metrics.ts";
export { attributionPatching } from "./model/attribution.ts";
export type { AttributionPoint } from "./model/attribution.ts";
export type { Tokens, TokenTensor } from "./model/tokens.ts";
export { nextTokenLogProbs } from "./model/next_token.ts";
export type { NextTokenLogProbs, NextTokenOptions } from "./model/next_token.ts";
export { PATCH_POINTS, patchedNextTokenLogProbs } from "./model/patching.ts";
export type {
  LayerPatches,
  PatchedLogProbs,
  PatchedLogProbsOptions,
  PatchPoint,
  PositionPatch,
} from "./model/patching.ts";
export type {
  ActivationFunction,
  HookedTransformerConfig,
  NormalizationType,
  PositionalEmbeddingType,
} from "./model/config.ts";
export type { ProcessingOptions } from "./model/processing.ts";
export { select, stack, tensor } from "./core/tensor.ts";
export type { Tensor } from "./core/tensor.ts";
export { SeededRng } from "./core/rng.ts";
export { parseSafetensors, writeSafetensors } from "./io/safetensors.ts";
export type {
  Dtype,
  FloatDtype,
  SafetensorsFile,
  TensorInfo,
  WriteOptions,
} from "./io/safetensors.ts";
export { syntheticGpt2 } from "./weights/synthetic.ts";
export type { SyntheticGpt2, SyntheticGpt2Options } from "./weights/synthetic.ts";
export { isModelCached, MODEL_ALIASES, resolveModel } from "./io/resolve.ts";
export type { ModelFiles, ResolveOptions } from "./io/resolve.ts";
export type { Tokenizer } from "./tokenizer/tokenizer.ts";
export { WasmBackend } from "./backend/wasm/wasm_backend.ts";
export type { LoadOptions } from "./backend/wasm/kernels.ts";
export type {
  AttentionArgs,
  AttentionGradArgs,
  Backend,
  CausalOptions,
  DeviceArray,
  LayerNormOptions,
  MatmulOptions,
  NormBackwardOptions,
  PackedMatrix,
  Scope,
  WeightDtype,
} from "./backend/backend.ts";
export {
  ConfigError,
  HookError,
  InputError,
  IntegrityError,
  KernelError,
  LensError,
  ModelNotFoundError,
  SafetensorsError,
  WeightsError,
} from "./core/errors.ts";

// Analysis: the study "How to interpret GPT2-small" (repeated tokens, scores, patching, circuits).
export { generateRepeatedTokens } from "./analysis/repeated_tokens.ts";
export type { RepeatedTokensOptions } from "./analysis/repeated_tokens.ts";
export { logProbsAndHeadScores, logProbSummary } from "./analysis/log_probs.ts";
export type { LogProbSummary } from "./analysis/log_probs.ts";
export {
  addScores,
  attentionPattern,
  diagonalMean,
  emptyScores,
  headScores,
  scoreOffsets,
} from "./analysis/head_scores.ts";
export type { AttentionPattern, HeadScores } from "./analysis/head_scores.ts";
export { patchingScores, patchPositions } from "./analysis/patching.ts";
export type { PatchAlignment, PatchingOptions, PatchPositions } from "./analysis/patching.ts";
export { FactoredMatrix, top1Accuracy } from "./analysis/factored_matrix.ts";
export type {
  FactoredMatrixOptions,
  RowBlock,
  Svd,
  Top1Options,
} from "./analysis/factored_matrix.ts";
export { kCompositionCircuit, ovCircuit, qkCircuit } from "./analysis/circuits.ts";
export type { HeadIndex } from "./analysis/circuits.ts";
export type { ProgressCallback } from "./core/progress.ts";
