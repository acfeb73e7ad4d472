/**
 * The kernel module's ABI, in one place: the exports `assembly/index.ts` compiles to, the op codes
 * and argument order of the calls that run on worker threads, the layout of the control block the
 * threads share, and {@linkcode runOp}, which every thread uses to run an op from its slot.
 *
 * It imports nothing, so a worker thread's module graph is this file and `worker.ts` alone (a
 * program that may read only `backend/wasm/` can start workers).
 * @module
 */

/** Raw exports of the kernel module (byte offsets and sizes; see `assembly/`). */
export interface KernelExports {
  heapBase(): number;
  matmulScratchBytes(): number;
  packedSize(k: number, n: number): number;
  packB(src: number, dst: number, k: number, n: number): void;
  unpackB(src: number, dst: number, k: number, n: number): void;
  packedSizeBf16(k: number, n: number): number;
  packBBf16(src: number, dst: number, k: number, n: number): void;
  unpackBBf16(src: number, dst: number, k: number, n: number): void;
  // The threaded ops below take their arguments in the order of OPS[op].args.
  matmul(...args: number[]): void;
  matmulBf16(...args: number[]): void;
  layerNorm(...args: number[]): void;
  geluNew(...args: number[]): void;
  add(...args: number[]): void;
  copyRows(...args: number[]): void;
  attention(...args: number[]): void;
  attentionScores(...args: number[]): void;
  softmaxRows(...args: number[]): void;
  attentionApply(...args: number[]): void;
  rowArgmax(...args: number[]): void;
  rowMaxSumExp(...args: number[]): void;
  sumHeads(...args: number[]): void;
  rotary(...args: number[]): void;
  rmsNorm(...args: number[]): void;
  affineRows(...args: number[]): void;
  activation(...args: number[]): void;
  gatedActivation(...args: number[]): void;
  // Backward passes (op codes 40-59).
  matmulBT(...args: number[]): void;
  matmulBTBf16(...args: number[]): void;
  normBackward(...args: number[]): void;
  attentionGradPattern(...args: number[]): void;
  softmaxBackwardRows(...args: number[]): void;
  attentionGradQK(...args: number[]): void;
  crossEntropyGradRows(...args: number[]): void;
  activationBackward(...args: number[]): void;
  gatedActivationBackward(...args: number[]): void;
  // Sparse autoencoders (op codes 70-79).
  jumpRelu(...args: number[]): void;
  gatedRelu(...args: number[]): void;
  topkRows(...args: number[]): void;
  // Gemma (op codes 25-26, 50-51).
  headRmsNorm(...args: number[]): void;
  headRmsNormBackward(...args: number[]): void;
  softcap(...args: number[]): void;
  softcapBackward(...args: number[]): void;
}

/** Arguments of matmul and matmulBf16, in the exports' order. */
const MATMUL_ARGS = [
  "a",
  "packedB",
  "c",
  "m",
  "k",
  "n",
  "lda",
  "ldc",
  "bias",
  "accumulate",
  "rowStart",
  "rowEnd",
  "panelStart",
  "panelEnd",
  "scratch",
] as const;

/** Arguments of matmulBT and matmulBTBf16, in the exports' order. */
const MATMUL_BT_ARGS = [
  "a",
  "packedB",
  "c",
  "m",
  "k",
  "n",
  "lda",
  "ldc",
  "accumulate",
  "rowStart",
  "rowEnd",
  "panelStart",
  "panelEnd",
  "scratch",
] as const;

/**
 * The ops a worker thread can run: op code and argument names in the export's order (the host
 * writes them into a slot as float64, in this order; the thread passes them on).
 */
export const OPS = {
  matmul: { code: 1, args: MATMUL_ARGS },
  /** The same arguments as matmul, over a bf16-packed B. */
  matmulBf16: { code: 2, args: MATMUL_ARGS },
  layerNorm: {
    code: 3,
    args: ["x", "out", "rows", "d", "eps", "gamma", "beta", "scale", "rowStart", "rowEnd"],
  },
  geluNew: { code: 4, args: ["x", "out", "start", "end"] },
  add: { code: 5, args: ["a", "b", "out", "start", "end"] },
  attention: {
    code: 6,
    args: [
      "q",
      "k",
      "v",
      "stride",
      "z",
      "zStride",
      "nQ",
      "qStart",
      "dHead",
      "scale",
      "pattern",
      "headStart",
      "headEnd",
      "scratch",
      "group",
      "kStart",
      "window",
      "softcap",
    ],
  },
  attentionScores: {
    code: 7,
    args: [
      "q",
      "k",
      "stride",
      "nQ",
      "qStart",
      "dHead",
      "scale",
      "scores",
      "headStart",
      "headEnd",
      "group",
      "kStart",
      "window",
      "softcap",
    ],
  },
  softmaxRows: {
    code: 8,
    args: [
      "scores",
      "pattern",
      "nQ",
      "qStart",
      "headStart",
      "headEnd",
      "kStart",
      "causal",
      "window",
    ],
  },
  attentionApply: {
    code: 9,
    args: [
      "pattern",
      "v",
      "stride",
      "z",
      "zStride",
      "nQ",
      "qStart",
      "dHead",
      "headStart",
      "headEnd",
      "group",
      "kStart",
      "causal",
      "window",
    ],
  },
  rowArgmax: { code: 10, args: ["x", "n", "ld", "out", "rowStart", "rowEnd"] },
  rowMaxSumExp: { code: 11, args: ["x", "n", "ld", "out", "rowStart", "rowEnd"] },
  copyRows: { code: 12, args: ["src", "dst", "cols", "stride", "rowStart", "rowEnd"] },
  /** out[r] = sum over heads of x[r, head] (+ bias): attention output from per-head results. */
  sumHeads: { code: 60, args: ["x", "out", "heads", "d", "bias", "rowStart", "rowEnd"] },
  // 20-39: the kernels of rotary, RMSNorm and gated-MLP model families.
  rotary: {
    code: 20,
    args: ["x", "stride", "nHeads", "dHead", "rotaryDim", "cs", "rowStart", "rowEnd"],
  },
  rmsNorm: { code: 21, args: ["x", "out", "rows", "d", "eps", "scale", "rowStart", "rowEnd"] },
  affineRows: { code: 22, args: ["x", "out", "d", "w", "b", "rowStart", "rowEnd"] },
  activation: { code: 23, args: ["x", "out", "act", "start", "end"] },
  gatedActivation: { code: 24, args: ["gateUp", "out", "dMlp", "act", "rowStart", "rowEnd"] },
  // 25-39: Gemma 2 and 3 (q_norm / k_norm over each head, logit softcapping).
  headRmsNorm: {
    code: 25,
    args: ["x", "stride", "nHeads", "dHead", "w", "eps", "scale", "rowStart", "rowEnd"],
  },
  softcap: { code: 26, args: ["x", "out", "cap", "start", "end"] },
  // ---- Backward passes ----
  /** C[m, k] = A[m, n] @ B^T over B packed [k, n]; panels are C's column panels. */
  matmulBT: { code: 40, args: MATMUL_BT_ARGS },
  /** The same over a bf16-packed B. */
  matmulBTBf16: { code: 41, args: MATMUL_BT_ARGS },
  normBackward: {
    code: 42,
    args: [
      "x",
      "g",
      "gamma",
      "dx",
      "dScale",
      "rows",
      "d",
      "eps",
      "center",
      "scaleGiven",
      "accumulate",
      "rowStart",
      "rowEnd",
    ],
  },
  attentionGradPattern: {
    code: 44,
    args: [
      "dz",
      "dzStride",
      "v",
      "stride",
      "pattern",
      "dPattern",
      "dv",
      "dStride",
      "T",
      "dHead",
      "headStart",
      "headEnd",
      "group",
      "kStart",
      "causal",
      "fullRows",
      "window",
    ],
  },
  softmaxBackwardRows: {
    code: 45,
    args: ["pattern", "dPattern", "dScores", "T", "headStart", "headEnd"],
  },
  attentionGradQK: {
    code: 46,
    args: [
      "dScores",
      "q",
      "k",
      "stride",
      "dq",
      "dk",
      "dStride",
      "T",
      "dHead",
      "scale",
      "headStart",
      "headEnd",
      "group",
      "kStart",
      "window",
      "softcap",
      "scratch",
    ],
  },
  crossEntropyGradRows: {
    code: 47,
    args: ["x", "n", "ld", "ms", "coef", "target", "out", "ldOut", "rowStart", "rowEnd"],
  },
  // 48-49: the backward of the families' activations (activation, gatedActivation).
  activationBackward: { code: 48, args: ["x", "dy", "dx", "act", "start", "end"] },
  gatedActivationBackward: {
    code: 49,
    args: ["gateUp", "dOut", "dGateUp", "dMlp", "act", "rowStart", "rowEnd"],
  },
  // 70-79: sparse autoencoders' activations (JumpReLU, gated, top-k along rows).
  jumpRelu: { code: 70, args: ["x", "threshold", "out", "n", "rowStart", "rowEnd"] },
  gatedRelu: { code: 71, args: ["gateMag", "out", "n", "rowStart", "rowEnd"] },
  topkRows: { code: 72, args: ["x", "out", "n", "k", "rowStart", "rowEnd"] },
  // 50-59: the backward of Gemma's kernels.
  headRmsNormBackward: {
    code: 50,
    args: [
      "x",
      "stride",
      "g",
      "gStride",
      "nHeads",
      "dHead",
      "w",
      "eps",
      "rowStart",
      "rowEnd",
    ],
  },
  softcapBackward: { code: 51, args: ["x", "dy", "dx", "cap", "start", "end"] },
} as const;

/** The activation functions of `activation` and `gatedActivation`, by their code in the module. */
export const ACTIVATION_CODES = { gelu_new: 0, gelu: 1, silu: 2, relu: 3 } as const;

/** Name of a threaded op. */
export type OpName = keyof typeof OPS;

const NAME_OF_CODE: OpName[] = [];
for (const [name, op] of Object.entries(OPS) as [OpName, { code: number }][]) {
  NAME_OF_CODE[op.code] = name;
}
for (const [name, op] of Object.entries(OPS)) {
  // An op's own arguments must end before the scheduling ones (COUNTER, below).
  if (op.args.length > 21) throw new Error(`kernel op ${name} has more than 21 arguments`);
}

/** The op's name for a code (for messages), or `op <code>`. */
export function opName(code: number): string {
  return NAME_OF_CODE[code] ?? `op ${code}`;
}

/**
 * The index of an op's argument, by name: where the host writes it in the slot.
 *
 * @example
 * ```ts
 * import { argIndex } from "./abi.ts";
 * argIndex("matmul", "rowStart"); // 10
 * ```
 */
export function argIndex(op: OpName, arg: string): number {
  const i = (OPS[op].args as readonly string[]).indexOf(arg);
  if (i < 0) throw new Error(`kernel op ${op} has no argument ${arg}`);
  return i;
}

// ---- The control block: one slot per thread (slot 0 is the calling thread's arguments). ----

/** Bytes of one thread's slot in the control block. */
export const SLOT_BYTES = 256;
/** Int32 indices inside a slot's header. */
export const SEQ = 0, STATE = 1, OP = 2, STATUS = 3, READY = 4;
/** Int32 index, in slot 0's header, of the counter that dynamically scheduled ops share. */
export const COUNTER_I32 = 5;
/**
 * Slot states. The caller posts a job (POSTED, then bumps SEQ); a worker that wakes claims it
 * with compare-and-swap POSTED -> RUNNING and sets IDLE when done. A caller that has finished its
 * own share claims still-unclaimed jobs with POSTED -> CANCELLED and runs them itself, so it
 * never waits for a worker that the OS has not scheduled yet.
 */
export const IDLE = 0, POSTED = 1, RUNNING = 2, CANCELLED = 3;
/**
 * The state the pool's `close()` sets (then bumps SEQ) to ask a worker to leave its loop and let
 * its thread end: a worker blocked in `Atomics.wait` survives `terminate()` in Deno, so it is
 * woken and exits by itself.
 */
export const EXIT = 4;
/** Float64 index (inside a slot) of the first argument. */
export const ARGS_F64 = 8;
/**
 * Float64 slots for arguments: an op's own arguments (at most COUNTER of them), then the
 * scheduling ones below (24 fill the slot: (SLOT_BYTES - ARGS_F64 * 8) / 8).
 */
export const MAX_ARGS = 24;
/**
 * Scheduling arguments, after an op's own: the byte offset of the shared chunk counter (0: run
 * the arguments as written), the chunk size, and the index of the `[start, end)` argument pair a
 * chunk replaces.
 */
export const COUNTER = 21, CHUNK = 22, SPLIT = 23;

/** What a worker needs to start (sent as workerData or as the first message). */
export interface WorkerInit {
  kernelsWorker: true;
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  /** Byte offset of this worker's slot. */
  slot: number;
}

/**
 * Runs op `code` with the float64 arguments `a` (the same code on every thread).
 *
 * When `a[COUNTER]` is the byte offset of an Int32 counter (reset to 0 by the caller), the op is
 * scheduled dynamically: each thread repeatedly takes the next chunk index with `Atomics.add` and
 * runs the op over that chunk of the `[a[a[SPLIT]], a[a[SPLIT] + 1])` range, until none is left.
 * So a thread slowed down by another process takes fewer chunks; which thread computes a chunk
 * never changes its bits. `mem` is an Int32Array over the memory (valid at least over the control
 * block).
 */
export function runOp(ex: KernelExports, code: number, a: Float64Array, mem: Int32Array): void {
  const name = NAME_OF_CODE[code];
  if (name === undefined) throw new Error(`unknown kernel op ${code}`);
  const fn = ex[name];
  const args = Array.from(a.subarray(0, OPS[name].args.length));
  const counter = a[COUNTER] / 4;
  if (!counter) {
    fn(...args);
    return;
  }
  const split = a[SPLIT], chunk = a[CHUNK];
  const begin = args[split], end = args[split + 1];
  for (;;) {
    const s = begin + Atomics.add(mem, counter, 1) * chunk;
    if (s >= end) break;
    args[split] = s;
    args[split + 1] = Math.min(end, s + chunk);
    fn(...args);
  }
}
