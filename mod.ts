/**
 * TransformerLens for Deno: GPT-2, Pythia (GPT-NeoX), Llama and Qwen2 models on WebAssembly SIMD
 * kernels, with TransformerLens's hook points for caching, reading and patching every activation,
 * its toolkit, and the analyses of "How to interpret GPT2-small".
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
  ModelInput,
  ReturnType,
  RunOptions,
  RunWithCacheOptions,
  RunWithHooksOptions,
} from "./model/hooked_transformer.ts";
export type {
  CacheLogitsOf,
  CacheLossOf,
  LossOf,
  OptionValue,
  OutputOf,
  ReturnTypeOf,
  RunResult,
  RunWithCacheResult,
  StopsOf,
} from "./model/run_types.ts";
export type {
  AddHookOptions,
  HookDirection,
  RegisteredHook,
  ResetHooksOptions,
} from "./model/hook_registry.ts";
export type { GenerateOptions, GenerateResult } from "./model/generate.ts";
export type { AttentionMask, Padding, PaddingSide } from "./model/padding.ts";
export type { TokenizeOptions, TokenPositionOptions } from "./model/text.ts";
export { ActivationCache } from "./model/activation_cache.ts";
export type {
  AccumulatedResidOptions,
  ApplyLnOptions,
  CacheModel,
  DecomposeResidOptions,
  FullResidDecompositionOptions,
  LogitAttrsOptions,
  LogitTokens,
  SliceInput,
  StackHeadResultsOptions,
  StackNeuronResultsOptions,
} from "./model/activation_cache.ts";
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
export type { NormParams } from "./model/params.ts";
export { select, stack, tensor } from "./core/tensor.ts";
export type { Tensor } from "./core/tensor.ts";
export {
  abs,
  add,
  arange,
  argmax,
  argmin,
  broadcastShapes,
  cat,
  div,
  einsum,
  eq,
  exp,
  fromNested,
  full,
  ge,
  gt,
  index,
  item,
  le,
  log,
  logSoftmax,
  lt,
  map,
  matmul,
  max,
  maximum,
  mean,
  min,
  minimum,
  mul,
  ne,
  neg,
  permute,
  pow,
  reshape,
  slice,
  softmax,
  sqrt,
  sub,
  sum,
  take,
  toNested,
  topk,
  transpose,
  where,
} from "./core/ops.ts";
export type {
  EinsumOptions,
  IndexSpec,
  Range,
  ReduceOptions,
  TensorOrNumber,
  TopkOptions,
} from "./core/ops.ts";
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
export type { TensorMeta, TensorSource } from "./io/tensor_source.ts";
export { parseShardIndex, shardedTensorSource } from "./io/sharded.ts";
export type { ShardIndex } from "./io/sharded.ts";
export { readTorchCheckpoint } from "./io/torch_bin.ts";
export type { TorchCheckpoint } from "./io/torch_bin.ts";
export type { TorchBinLimits } from "./io/torch_bin.ts";
export { isModelCached, MODEL_ALIASES, resolveModel, WEIGHT_FILES } from "./io/resolve.ts";
export {
  PYTHIA_160M,
  SMOLLM2_135M,
  syntheticGptNeox,
  syntheticLlama,
} from "./weights/synthetic_families.ts";
export type {
  SyntheticGptNeoxOptions,
  SyntheticLlamaOptions,
  SyntheticOptions,
} from "./weights/synthetic_families.ts";
export type { ModelFiles, ResolveOptions } from "./io/resolve.ts";
export type { HubOptions } from "./io/hub.ts";
export type { Tokenizer } from "./tokenizer/tokenizer.ts";
export { WasmBackend } from "./backend/wasm/wasm_backend.ts";
export type { LoadOptions } from "./backend/wasm/kernels.ts";
// Devices: the `device` option's choice of backend, and the WebGPU backend with its errors.
export { deviceOf, DEVICES, loadBackend } from "./backend/select.ts";
export type { BackendOptions, Device } from "./backend/select.ts";
export { WebGpuBackend } from "./backend/webgpu/webgpu_backend.ts";
export type { GpuLoadOptions, WebGpuLoadOptions } from "./backend/webgpu/webgpu_backend.ts";
export { GpuDeviceLostError, GpuOutOfMemoryError, GpuUnavailableError } from "./core/errors.ts";
export type {
  Activation,
  AttentionArgs,
  AttentionGradArgs,
  Backend,
  CausalOptions,
  DeviceArray,
  MatmulOptions,
  NormBackwardOptions,
  NormOptions,
  PackedMatrix,
  RotaryLayout,
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
  PickleError,
  SafetensorsError,
  WeightsError,
} from "./core/errors.ts";
export { NumericError } from "./core/errors.ts";

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
export {
  genericActivationPatch,
  getActPatchAttnHeadAllPosEvery,
  getActPatchAttnHeadByPosEvery,
  getActPatchAttnHeadKAllPos,
  getActPatchAttnHeadKByPos,
  getActPatchAttnHeadOutAllPos,
  getActPatchAttnHeadOutByPos,
  getActPatchAttnHeadPatternAllPos,
  getActPatchAttnHeadPatternByPos,
  getActPatchAttnHeadPatternDestSrcPos,
  getActPatchAttnHeadQAllPos,
  getActPatchAttnHeadQByPos,
  getActPatchAttnHeadVAllPos,
  getActPatchAttnHeadVByPos,
  getActPatchAttnOut,
  getActPatchBlockEvery,
  getActPatchMlpOut,
  getActPatchResidMid,
  getActPatchResidPre,
  layerHeadDestSrcPosPatternPatchSetter,
  layerHeadPatternPatchSetter,
  layerHeadPosPatternPatchSetter,
  layerHeadVectorPatchSetter,
  layerPosHeadVectorPatchSetter,
  layerPosPatchSetter,
} from "./analysis/activation_patching.ts";
export type {
  ActPatchFunction,
  ActPatchOptions,
  AxisName,
  GenericPatchOptions,
  PatchingMetric,
  PatchSetter,
} from "./analysis/activation_patching.ts";
export { FactoredMatrix, top1Accuracy } from "./analysis/factored_matrix.ts";
export type {
  FactoredMatrixOptions,
  RowBlock,
  Svd,
  Top1Options,
} from "./analysis/factored_matrix.ts";
export { kCompositionCircuit, ovCircuit, qkCircuit } from "./analysis/circuits.ts";
export { allCompositionScores } from "./analysis/composition.ts";
export type { CompositionMode } from "./analysis/composition.ts";
export { detectHead, detectionPattern } from "./analysis/head_detector.ts";
export type { DetectHeadOptions, ErrorMeasure, HeadName } from "./analysis/head_detector.ts";
export { lmAccuracy, lmCrossEntropyLoss, testPrompt } from "./analysis/lm_utils.ts";
export type {
  AnswerPosition,
  LmLossOptions,
  TestPromptOptions,
  TestPromptResult,
  TokenRank,
} from "./analysis/lm_utils.ts";
export type { HeadIndex } from "./analysis/circuits.ts";
export type { ProgressCallback } from "./core/progress.ts";
// Sparse autoencoders and transcoders (SAELens's semantics; sae/)
export { NpyError } from "./core/errors.ts";
export type { NestedHookPoints } from "./model/hooks.ts";
export { parseNpy, parseNpyHeader, parseNpz } from "./io/npy.ts";
export type { NpyHeader } from "./io/npy.ts";
export {
  parseSaeConfig,
  registerSaeRelease,
  SAE,
  SAE_HOOK_POINTS,
  SAEModule,
  saeReleases,
} from "./sae/mod.ts";
export type {
  AddSaeOptions,
  LoadSaeOptions,
  NormalizeActivations,
  ReshapeActivations,
  SaeArchitecture,
  SaeBackendOptions,
  SaeConfig,
  SaeHookPoint,
  SaeLoadOptions,
  SaeLocation,
  SaeReleaseEntry,
  SaeRun,
  SaeRunOptions,
  SaeWeights,
} from "./sae/mod.ts";
export {
  featureAttribution,
  featureDla,
  steerFeature,
  topActivatingContexts,
} from "./sae/analysis.ts";
export type {
  FeatureAttribution,
  FeatureContext,
  FeatureDlaOptions,
  TopContexts,
  TopContextsOptions,
} from "./sae/analysis.ts";

// Padding from pad tokens (TransformerLens's utils.get_attention_mask).
export { getAttentionMask } from "./model/text.ts";
export type { PadModel } from "./model/text.ts";
// Python's t[0] / cache["pattern", 0] fail loudly.
export { guardTensor } from "./core/tensor.ts";
// FactoredMatrix.get's index form, and tensor operations as ARENA code writes them (index
// assignment, gather, triangular masks, shapes, norms).
export type { FactoredIndex } from "./analysis/factored_matrix.ts";
export { allclose, norm, set } from "./core/ops.ts";
export type { AllcloseOptions, VectorNormOptions } from "./core/ops.ts";
export {
  clone,
  cumsum,
  diagonal,
  expand,
  flatten,
  gather,
  repeat,
  squeeze,
  tril,
  triu,
  unsqueeze,
} from "./core/manipulation.ts";
export type { IndexTensor } from "./core/manipulation.ts";
// Gemma 2 and Gemma 3.
export type { AttentionType } from "./model/config.ts";
export type { HeadLayout } from "./backend/backend.ts";
export { GEMMA3_270M, syntheticGemma } from "./weights/synthetic_families.ts";
export type { SyntheticGemmaOptions } from "./weights/synthetic_families.ts";

// Views for notebooks and pages (CircuitsVis's counterpart), as a namespace: `viz.attentionHeads`,
// `viz.logitLens`, ... (`viz.attentionPattern` draws a pattern; the top-level `attentionPattern`
// reads one from a cache). Also importable alone from `viz/mod.ts`. Inside `deno jupyter`,
// importing this module makes Tensors and ActivationCaches display as tables.
export * as viz from "./viz/mod.ts";
