// Entry point of the kernel module. Everything exported here is a plain
// function over byte offsets into the imported shared memory; no strings,
// arrays or runtime objects cross the boundary.

export {
  packedSize, packB, unpackB, matmul, matmulScratchBytes,
  packedSizeBf16, packBBf16, unpackBBf16, matmulBf16,
  matmulBT, matmulBTBf16,
} from "./matmul";
export { layerNorm, rmsNorm, affineRows } from "./norm";
export { normBackward } from "./norm_backward";
export { geluNew, add, copyRows } from "./elementwise";
export { attention, attentionScores, softmaxRows, attentionApply } from "./attention";
export { attentionGradPattern, softmaxBackwardRows, attentionGradQK } from "./attention_backward";
export { rowArgmax, rowMaxSumExp, crossEntropyGradRows } from "./rows";
export { sumHeads } from "./heads";
export { activation, gatedActivation } from "./activations";
export { activationBackward, gatedActivationBackward } from "./activations_backward";
export { rotary } from "./rotary";
export { jumpRelu, gatedRelu, topkRows } from "./sae";
export { headRmsNorm, headRmsNormBackward, softcap, softcapBackward } from "./gemma";

// First byte the host may use for its own allocations.
export function heapBase(): usize {
  return __heap_base;
}
