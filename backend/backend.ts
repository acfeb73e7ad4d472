/**
 * The boundary between the model and the hardware: what the forward pass, patching and the
 * analyses need from a compute backend. The model holds {@linkcode DeviceArray} handles and
 * {@linkcode PackedMatrix} weights and calls these operations; where the floats live (WebAssembly
 * memory today, `backend/wasm/`) and how they are addressed stays behind the interface, so a
 * second backend (WebGPU) can implement it without touching `model/`.
 *
 * Memory is scoped: {@linkcode Backend.scope} opens an arena whose arrays all go away when it is
 * disposed (`using scope = backend.scope()`), and only the innermost open scope may allocate, so
 * lifetimes nest by construction.
 *
 * Device operations enqueue; host reads are promises. Allocation, uploads, writes, copies and
 * every compute operation return at once (on a GPU they only record the work) and take effect in
 * the order they were called. The host reads ({@linkcode Backend.read},
 * {@linkcode Backend.readInto}, {@linkcode Backend.readRows}, {@linkcode Backend.readMatrix}, and
 * the row reductions that return host arrays: {@linkcode Backend.logSumExpRows},
 * {@linkcode Backend.takeAlongRows}, {@linkcode Backend.argmaxRows},
 * {@linkcode Backend.crossEntropyGradRows}) return promises that resolve after all the work
 * enqueued before them, with the values as that work left them: an operation enqueued after a
 * read never changes what the read returns, so a caller may issue several reads and await them
 * together. A read's bad argument arrives as a rejection. Disposing a scope does not cut short
 * the reads issued before it: its arrays stay valid until those reads resolve. The WebAssembly
 * backend computes as each call is made, and its reads return already-settled promises.
 *
 * One caller at a time: scopes nest on one stack, so two passes must not interleave on one
 * backend (the model's entry points queue their calls, `model/exclusive.ts`).
 * @module
 */

/**
 * A contiguous run of float32 values in the backend's memory. It is a handle: the values are read
 * and written through the backend ({@linkcode Backend.read}, {@linkcode Backend.write}).
 *
 * @example
 * ```ts
 * import { WasmBackend } from "./wasm/wasm_backend.ts";
 * const backend = await WasmBackend.load({ threads: 1 });
 * using scope = backend.scope();
 * const x = scope.upload(new Float32Array([1, 2, 3, 4]));
 * await backend.read(x.at(2)); // Float32Array [3, 4]
 * ```
 */
export interface DeviceArray {
  /** Number of float32 values. */
  readonly length: number;
  /** The values [offset, offset + length) of this array, as an array of their own (no copy). */
  at(offset: number, length?: number): DeviceArray;
}

/**
 * How the big weight matrices are stored: float32; bfloat16 (8 significant bits, float32's
 * range); or IEEE half precision f16 (11 significant bits, largest value 65504: a weight beyond
 * it is refused). Arithmetic is float32 in every case: each stored weight is widened exactly.
 * bf16 halves the memory on both backends; f16 halves it on WebGPU (packed two per u32, decoded
 * by WGSL's `unpack2x16float`, no `shader-f16` needed), while the WebAssembly backend keeps f16
 * weights as their exact f32 values (same numbers, f32's memory). Rounding is to nearest even.
 */
export type WeightDtype = "f32" | "bf16" | "f16";

/**
 * A right-hand matrix [k, n] stored in the layout the backend's matmul reads (packed once, when
 * the weights are uploaded).
 */
export interface PackedMatrix {
  /** Rows (the inner dimension of a product). */
  readonly k: number;
  /** Columns. */
  readonly n: number;
  /** Storage precision. */
  readonly dtype: WeightDtype;
}

/**
 * An arena of device arrays, released together when disposed. Only the innermost open scope may
 * allocate; disposing a scope also disposes every scope opened inside it. Arrays of a disposed
 * scope can no longer be used (the backend refuses them).
 *
 * @example
 * ```ts
 * import { WasmBackend } from "./wasm/wasm_backend.ts";
 * const backend = await WasmBackend.load({ threads: 1 });
 * {
 *   using scope = backend.scope();
 *   const buf = scope.alloc(1024);
 *   buf.length; // 1024
 * } // released here
 * ```
 */
export interface Scope extends Disposable {
  /** A new array of `n` uninitialised floats. */
  alloc(n: number): DeviceArray;
  /** A new array holding a copy of `data`. */
  upload(data: Float32Array): DeviceArray;
  /** A [k, n] row-major matrix packed for matmul, living as long as the scope. */
  uploadMatrix(data: Float32Array, k: number, n: number, dtype?: WeightDtype): PackedMatrix;
  /** Releases every array of this scope (and of scopes opened inside it). */
  [Symbol.dispose](): void;
}

/** Options of {@linkcode Backend.matmul}. */
export interface MatmulOptions {
  /** Row stride of A in floats (default k). */
  lda?: number;
  /** Row stride of C in floats (default n). */
  ldc?: number;
  /** n floats added to every row of C. */
  bias?: DeviceArray;
  /** Add the product to C instead of overwriting it. */
  accumulate?: boolean;
}

/** Options of {@linkcode Backend.layerNorm} and {@linkcode Backend.rmsNorm}. */
export interface NormOptions {
  /**
   * Receives each row's scale, sqrt(var + eps) or sqrt(mean(x^2) + eps) (TransformerLens's
   * hook_scale).
   */
  scale?: DeviceArray;
}

/** The MLP activation functions, TransformerLens's names (`gelu` is the exact, erf one). */
export type Activation = "gelu_new" | "gelu" | "silu" | "relu";

/** Where rotary embeddings turn: `rows` rows `stride` floats apart, heads from column 0. */
export interface RotaryLayout {
  /** Number of rows. */
  rows: number;
  /** Row stride in floats. */
  stride: number;
  /** Heads turned in each row (the query heads, then the key heads of fused Q|K|V rows). */
  nHeads: number;
  /** Width of one head. */
  dHead: number;
  /** Leading dims of each head that turn (even, at most dHead); the rest pass through. */
  rotaryDim: number;
}

/**
 * One sequence's causal attention: queries at absolute positions qStart .. qStart + nQ - 1, keys
 * and values at 0 .. qStart + nQ - 1, query i seeing keys [kStart, qStart + i]. Row i of q, k and
 * v starts at `i * stride` of its array; query head h uses columns [h dHead, (h + 1) dHead) of q
 * and z, and key/value head floor(h / (nHeads / nKeyValueHeads)) the same columns of k and v.
 */
export interface AttentionArgs {
  /** Query rows (row i is the query at position qStart + i). */
  q: DeviceArray;
  /** Key rows (row j is the key at position j). */
  k: DeviceArray;
  /** Value rows (row j is the value at position j). */
  v: DeviceArray;
  /** Row stride of q, k and v, in floats. */
  stride: number;
  /** Output rows, one per query. */
  z: DeviceArray;
  /** Row stride of z, in floats. */
  zStride: number;
  /** Number of queries. */
  nQ: number;
  /** Position of query 0. */
  qStart: number;
  /** Heads in each row. */
  nHeads: number;
  /** Width of one head. */
  dHead: number;
  /** Scores are (q . k) * scale. */
  scale: number;
  /** Key/value heads in each row of k and v (grouped-query attention; default nHeads). */
  nKeyValueHeads?: number;
  /**
   * Keys before this position are masked (left padding; default 0). A query before it sees no
   * key: its pattern row and z are zero, as TransformerLens makes fully masked rows.
   */
  kStart?: number;
  /**
   * Sliding-window attention (Gemma; 0 or absent: none): query i also sees no key at or before
   * position qStart + i - window, so it sees itself and the window - 1 keys before it.
   */
  window?: number;
  /**
   * Attention-logit softcapping (Gemma 2; 0 or absent: none): each score s = (q . k) scale
   * becomes softcap tanh(s / softcap) before the mask and the softmax, and the scores a caller
   * sees (`attentionScores`) are the capped ones.
   */
  softcap?: number;
}

/** Options of {@linkcode Backend.softmaxRows} and {@linkcode Backend.attentionApply}. */
export interface CausalOptions {
  /** First unmasked key (default 0). */
  kStart?: number;
  /**
   * Only the causal keys [kStart, qStart + i] of each row (default true). False: whole rows, so
   * scores or a pattern a hook changed above the diagonal are used as they are.
   */
  causal?: boolean;
  /** Sliding window of the causal keys (as in {@linkcode AttentionArgs}; read only when causal). */
  window?: number;
}

/** Options of {@linkcode Backend.normBackward}. */
export interface NormBackwardOptions {
  /** LayerNorm (true, default: the mean is subtracted) or RMSNorm (false). */
  center?: boolean;
  /** Receives dL/dscale of each row (hook_scale's gradient); with `scaleGiven`, supplies it. */
  scaleGrad?: DeviceArray;
  /** Read dL/dscale from `scaleGrad` (a backward hook replaced it) instead of computing it. */
  scaleGiven?: boolean;
  /** Add dL/dx to `dx` instead of overwriting it (the residual stream's gradient). */
  accumulate?: boolean;
}

/**
 * One sequence's attention backward: T positions, every one a query (qStart 0), laid out as in
 * {@linkcode AttentionArgs}. dq, dk and dv are rows `dStride` floats apart with the columns of q,
 * k and v (one fused gradient buffer beside the fused Q|K|V rows).
 */
export interface AttentionGradArgs {
  /** Query rows. */
  q: DeviceArray;
  /** Key rows. */
  k: DeviceArray;
  /** Value rows. */
  v: DeviceArray;
  /** Row stride of q, k and v, in floats. */
  stride: number;
  /** Gradient at z (hook_z), rows `dzStride` floats apart. */
  dz: DeviceArray;
  /** Row stride of dz, in floats. */
  dzStride: number;
  /** Receives the queries' gradient. */
  dq: DeviceArray;
  /** Receives the keys' gradient. */
  dk: DeviceArray;
  /** Receives the values' gradient. */
  dv: DeviceArray;
  /** Row stride of dq, dk and dv, in floats. */
  dStride: number;
  /** Positions. */
  T: number;
  /** Query heads. */
  nHeads: number;
  /** Width of one head. */
  dHead: number;
  /** The forward's score scale. */
  scale: number;
  /** Key/value heads (grouped-query attention; default nHeads). */
  nKeyValueHeads?: number;
  /** First unmasked key (left padding; default 0). */
  kStart?: number;
  /** The forward's sliding window (0 or absent: none), as in {@linkcode AttentionArgs}. */
  window?: number;
  /**
   * The forward's attention softcap (0 or absent: none): `attentionGradQK` takes dScores at the
   * capped scores and carries it through the cap (the raw scores recomputed from q and k).
   */
  softcap?: number;
}

/** Where {@linkcode Backend.headRmsNorm} works: heads of `rows` rows `stride` floats apart. */
export interface HeadLayout {
  /** Number of rows. */
  rows: number;
  /** Row stride in floats. */
  stride: number;
  /** Heads in each row, from column 0 (fused Q|K|V rows: the query heads, then the key heads). */
  nHeads: number;
  /** Width of one head. */
  dHead: number;
}

/**
 * The operations the model runs. Float32 throughout; each result is bit-identical whatever the
 * number of threads the backend uses.
 */
export interface Backend extends Disposable {
  /** Threads the backend computes on (counting the calling thread). */
  readonly threads: number;
  /**
   * True when every operation runs as it is called, so a host read's values are in place when
   * the read returns (WebAssembly). Synchronous helpers (`core/ops.ts`'s `matmul` and `einsum`)
   * use the backend only then; an asynchronous device (WebGPU) hands them to its
   * {@linkcode Backend.host}.
   */
  readonly eager?: boolean;
  /**
   * An eager backend on the CPU for the synchronous helpers' products of host arrays
   * (`core/ops.ts`'s `matmul2d`, `matmul` and `einsum`, and the circuit tools built on them),
   * which cannot wait for an asynchronous device. Absent on an eager backend, which is its own.
   * A WebGPU backend loaded by device name (`loadBackend("webgpu")`, so `fromPretrained` and
   * `model.to`) carries a WebAssembly one and closes it with itself; without one those products
   * run in plain JavaScript.
   */
  readonly host?: Backend;
  /** Stops the backend's worker threads; it keeps working on the calling thread alone. */
  close(): void;

  /** Opens an arena for temporary arrays (see {@linkcode Scope}). */
  scope(): Scope;
  /** Stores `data` for the backend's lifetime (weights); only while no scope is open. */
  upload(data: Float32Array): DeviceArray;
  /** Stores a [k, n] row-major matrix packed for matmul, for the backend's lifetime. */
  uploadMatrix(data: Float32Array, k: number, n: number, dtype?: WeightDtype): PackedMatrix;
  /** The packed matrix back as row-major [k, n] floats (bf16 and f16 values widened exactly). */
  readMatrix(m: PackedMatrix): Promise<Float32Array>;

  /** A copy of the array's values. */
  read(x: DeviceArray): Promise<Float32Array>;
  /**
   * An eager backend's {@linkcode Backend.read}, returned at once rather than as a promise (the
   * values every operation called so far left); absent on an asynchronous device. For
   * synchronous reads, as `cache.get(name).data` of a cache held in the backend.
   */
  readNow?(x: DeviceArray): Float32Array;
  /**
   * Copies the array's values into `out` from index `offset` (default 0), without an
   * intermediate array: how chunks of logits reach one large result.
   */
  readInto(x: DeviceArray, out: Float32Array, offset?: number): Promise<void>;
  /** Writes `data` at the start of `x` (`data.length <= x.length`). */
  write(x: DeviceArray, data: Float32Array): void;
  /** A dense copy of `rows` rows of `cols` floats whose starts are `stride` floats apart. */
  readRows(x: DeviceArray, rows: number, cols: number, stride: number): Promise<Float32Array>;
  /** Writes dense `data` (rows x cols) into rows `stride` floats apart. */
  writeRows(x: DeviceArray, data: Float32Array, rows: number, cols: number, stride: number): void;
  /** Copies `src` into the start of `dst` (the ranges may overlap). */
  copy(src: DeviceArray, dst: DeviceArray): void;
  /**
   * Copies `rows` rows of `cols` floats whose starts are `stride` floats apart in `src` into the
   * start of `dst`, densely (`readRows` without leaving the device); the ranges must not overlap.
   */
  copyRows(src: DeviceArray, rows: number, cols: number, stride: number, dst: DeviceArray): void;

  /** C[m, n] = A[m, k] @ B[k, n] (+ bias) (+ C when accumulating). */
  matmul(a: DeviceArray, b: PackedMatrix, c: DeviceArray, m: number, opts?: MatmulOptions): void;
  /**
   * Per row of d floats: (x - mean) / sqrt(var + eps), LayerNorm before its weight and bias
   * (`affineRows` applies them); x and out may alias.
   */
  layerNorm(
    x: DeviceArray,
    out: DeviceArray,
    rows: number,
    d: number,
    eps: number,
    opts?: NormOptions,
  ): void;
  /**
   * Per row of d floats: x / sqrt(mean(x^2) + eps) (RMSNorm before its weight, as
   * TransformerLens's hook_normalized sees it); x and out may alias.
   */
  rmsNorm(
    x: DeviceArray,
    out: DeviceArray,
    rows: number,
    d: number,
    eps: number,
    opts?: NormOptions,
  ): void;
  /** Per row of d floats: out = x * w (+ b), a normalization's weight and bias (may alias). */
  affineRows(
    x: DeviceArray,
    out: DeviceArray,
    rows: number,
    d: number,
    w: DeviceArray,
    b?: DeviceArray,
  ): void;
  /** out = act(x) elementwise (may alias). */
  activation(act: Activation, x: DeviceArray, out: DeviceArray): void;
  /**
   * Gated MLP: row r of `gateUp` is [gate (dMlp floats) | up (dMlp floats)]; row r of `out`
   * (dMlp floats) is act(gate) * up.
   */
  gatedActivation(
    act: Activation,
    gateUp: DeviceArray,
    out: DeviceArray,
    rows: number,
    dMlp: number,
  ): void;
  /**
   * Backward of {@linkcode Backend.activation}: dx = dy * act'(x) elementwise (dx may be x or dy),
   * with PyTorch autograd's values where the derivative is not defined: relu gives 0 where
   * x <= 0 (at 0 too) and dy elsewhere; gelu, gelu_new and silu give NaN at +-Infinity.
   */
  activationBackward(act: Activation, x: DeviceArray, dy: DeviceArray, dx: DeviceArray): void;
  /**
   * Backward of {@linkcode Backend.gatedActivation} (out = act(gate) * up): from rows of `gateUp`
   * and of `dOut` (d loss / d out, dMlp floats), row r of `dGateUp` gets
   * [dOut * up * act'(gate) | dOut * act(gate)] (2 dMlp floats; dGateUp may be gateUp).
   */
  gatedActivationBackward(
    act: Activation,
    gateUp: DeviceArray,
    dOut: DeviceArray,
    dGateUp: DeviceArray,
    rows: number,
    dMlp: number,
  ): void;
  /**
   * Sparse autoencoders' JumpReLU over `rows` rows of n floats: out[r, j] = x[r, j] where
   * x[r, j] > threshold[j] and x[r, j] > 0 (strict, as SAELens), else 0. x and out may alias.
   */
  jumpRelu(x: DeviceArray, threshold: DeviceArray, out: DeviceArray, rows: number, n: number): void;
  /**
   * A gated sparse autoencoder's activation: row r of `gateMag` is [gate (n floats) | magnitude
   * (n floats)]; row r of `out` (n floats) is gate > 0 ? max(magnitude, 0) : 0.
   */
  gatedRelu(gateMag: DeviceArray, out: DeviceArray, rows: number, n: number): void;
  /**
   * Top-k along rows (a TopK sparse autoencoder): each of `rows` rows of n floats keeps its k
   * largest values, ReLU'd (max(v, 0)), and is 0 elsewhere; on ties at the k-th value the first
   * indices win, NaN is never kept. 1 <= k <= n; x and out must not overlap.
   */
  topkRows(x: DeviceArray, out: DeviceArray, rows: number, n: number, k: number): void;
  /**
   * Rotary embeddings (the rotate-half convention of GPT-NeoX and Llama) in place: in each head,
   * dims i and i + rotaryDim/2 turn by angle i of the row's position. Row r of `cs` holds the
   * rotaryDim/2 cosines of row r's angles, then their sines.
   */
  rotary(x: DeviceArray, cs: DeviceArray, layout: RotaryLayout): void;
  /** out = a + b elementwise (any may alias). */
  add(a: DeviceArray, b: DeviceArray, out: DeviceArray): void;
  /**
   * RMSNorm with a weight over each head, in place (Gemma 3's q_norm and k_norm): each head's
   * dHead floats become x / sqrt(mean(x^2) + eps) * w, with `w` [nHeads * dHead] (one weight row
   * per head). `opts.scale` receives each head's scale [rows, nHeads].
   */
  headRmsNorm(
    x: DeviceArray,
    w: DeviceArray,
    layout: HeadLayout,
    eps: number,
    opts?: NormOptions,
  ): void;
  /**
   * out = cap tanh(x / cap) elementwise (Gemma's logit softcapping; may alias), computed in
   * float64 and rounded once.
   */
  softcap(x: DeviceArray, out: DeviceArray, cap: number): void;

  /**
   * out[r] = x[r, 0] + ... + x[r, heads - 1] (+ bias) for `rows` rows of x [rows, heads, d]: the
   * attention output from per-head results (TransformerLens's `hook_result` summed, plus b_O).
   */
  sumHeads(
    x: DeviceArray,
    out: DeviceArray,
    rows: number,
    heads: number,
    d: number,
    bias?: DeviceArray,
  ): void;

  /** z = softmax(causal((q . k) scale)) v per head; writes the pattern when given. */
  attention(a: AttentionArgs, pattern?: DeviceArray): void;
  /** Scores [nHeads, nQ, nK] = (q . k) scale, entries above the causal diagonal -Infinity. */
  attentionScores(a: AttentionArgs, scores: DeviceArray): void;
  /**
   * Pattern rows [nHeads, nQ, qStart + nQ] = softmax of score rows (may alias): over the causal
   * keys, other entries 0 (default), or over whole rows (`causal: false`; a row without a finite
   * score becomes zeros).
   */
  softmaxRows(
    scores: DeviceArray,
    pattern: DeviceArray,
    nHeads: number,
    nQ: number,
    qStart: number,
    opts?: CausalOptions,
  ): void;
  /** z = pattern v per head, over each query's causal keys (default) or every key. */
  attentionApply(a: AttentionArgs, pattern: DeviceArray, opts?: { causal?: boolean }): void;

  /** log(sum exp) of each of `rows` rows of n floats (row stride ld), accurate to ~1e-7. */
  logSumExpRows(x: DeviceArray, rows: number, n: number, ld?: number): Promise<Float64Array>;
  /** `x[r, index[r]]` for each row r of n floats (as `torch.gather` along the last axis). */
  takeAlongRows(x: DeviceArray, n: number, index: Int32Array): Promise<Float32Array>;
  /** Index of each row's largest value (the first on ties, as torch.argmax; NaN never wins). */
  argmaxRows(x: DeviceArray, rows: number, n: number, ld?: number): Promise<Int32Array>;

  // ---- Backward passes ----

  /**
   * C[m, b.k] = A[m, b.n] @ B^T (+ C when accumulating): dX = dY W^T from the forward's packed W,
   * with the forward matmul's per-element arithmetic on W^T.
   */
  matmulTransposed(
    a: DeviceArray,
    b: PackedMatrix,
    c: DeviceArray,
    m: number,
    opts?: Omit<MatmulOptions, "bias">,
  ): void;
  /**
   * The backward of {@linkcode Backend.layerNorm} (or of RMSNorm, `center: false`) over rows of d
   * floats: `x` its input, `grad` the gradient at its output. Writes dL/dx into `dx` (unless null:
   * only the scale's gradient) and dL/dscale into `opts.scaleGrad` when given.
   */
  normBackward(
    x: DeviceArray,
    grad: DeviceArray,
    dx: DeviceArray | null,
    rows: number,
    d: number,
    eps: number,
    opts?: NormBackwardOptions,
  ): void;
  /**
   * Attention backward, step 1: dPattern [nHeads, T, T] = dz_i . v_j over every key (`fullRows`,
   * hook_pattern's gradient as TransformerLens has it) or the causal keys (others 0), and dv =
   * pattern^T dz over the causal queries (or every query, `causal: false`, for a pattern a hook
   * changed).
   */
  attentionGradPattern(
    a: AttentionGradArgs,
    pattern: DeviceArray,
    dPattern: DeviceArray,
    opts?: { causal?: boolean; fullRows?: boolean },
  ): void;
  /**
   * Attention backward, step 2 (the softmax): dScores = pattern (dPattern - rowsum(pattern
   * dPattern)) over [nHeads, T, T] (dScores may alias dPattern): hook_attn_scores's gradient.
   */
  softmaxBackwardRows(
    pattern: DeviceArray,
    dPattern: DeviceArray,
    dScores: DeviceArray,
    nHeads: number,
    T: number,
  ): void;
  /**
   * The backward of {@linkcode Backend.headRmsNorm}: `x` its input (`layout`), `grad` the
   * gradient at its output (the same heads, rows `gradStride` floats apart), overwritten with
   * the gradient at x.
   */
  headRmsNormBackward(
    x: DeviceArray,
    grad: DeviceArray,
    w: DeviceArray,
    layout: HeadLayout & { gradStride: number },
    eps: number,
  ): void;
  /**
   * The backward of {@linkcode Backend.softcap} from its input: dx = dy (1 - tanh(x / cap)^2)
   * elementwise (dx may alias x or dy).
   */
  softcapBackward(x: DeviceArray, dy: DeviceArray, dx: DeviceArray, cap: number): void;
  /** Attention backward, step 3: dq and dk from dScores over the causal entries. */
  attentionGradQK(a: AttentionGradArgs, dScores: DeviceArray): void;
  /**
   * For each of `rows` rows of n floats: out[r] = coef[r] (softmax(x[r]) - onehot(target[r]))
   * (no one-hot term where target[r] < 0), the gradient of coef[r] * cross-entropy; returns each
   * row's log-sum-exp (a host read: `out` is written in order with the other operations, the
   * promise resolves with the log-sum-exps). out may alias x.
   */
  crossEntropyGradRows(
    x: DeviceArray,
    rows: number,
    n: number,
    coef: Float32Array,
    target: Int32Array,
    out: DeviceArray,
  ): Promise<Float64Array>;
}
