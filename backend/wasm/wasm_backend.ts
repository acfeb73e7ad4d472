/**
 * The WebAssembly backend: {@linkcode Backend} over the kernels of `kernels.ts`. Device arrays
 * are byte ranges of the kernels' shared memory; this file is where handles become byte offsets,
 * and where scopes become the allocator's marks.
 * @module
 */
import type {
  Activation,
  AttentionArgs,
  AttentionGradArgs,
  Backend,
  CausalOptions,
  DeviceArray,
  HeadLayout,
  MatmulOptions,
  NormBackwardOptions,
  NormOptions,
  PackedMatrix,
  RotaryLayout,
  Scope,
  WeightDtype,
} from "../backend.ts";
import { KernelError } from "../../core/errors.ts";
import { roundToF16 } from "../f16.ts";
import { type BDtype, Kernels, type LoadOptions } from "./kernels.ts";

/** A scope's state: open until disposed (directly or by an enclosing scope). */
class WasmScope implements Scope {
  open = true;
  constructor(readonly backend: WasmBackend, readonly mark: number, readonly depth: number) {}

  alloc(n: number): DeviceArray {
    return this.backend.allocIn(this, n);
  }

  upload(data: Float32Array): DeviceArray {
    const x = this.alloc(data.length);
    this.backend.write(x, data);
    return x;
  }

  uploadMatrix(data: Float32Array, k: number, n: number, dtype: WeightDtype = "f32"): PackedMatrix {
    return this.backend.matrixIn(this, data, k, n, dtype);
  }

  [Symbol.dispose](): void {
    this.backend.disposeScope(this);
  }
}

/** A range of the kernels' memory; `scope` is null for arrays that live as long as the backend. */
class WasmArray implements DeviceArray {
  constructor(
    readonly ptr: number,
    readonly length: number,
    readonly scope: WasmScope | null,
  ) {}

  at(offset: number, length: number = this.length - offset): DeviceArray {
    if (
      !Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 ||
      offset + length > this.length
    ) {
      throw new KernelError(
        `at(${offset}, ${length}) is outside a device array of ${this.length} floats`,
      );
    }
    return new WasmArray(this.ptr + offset * 4, length, this.scope);
  }
}

/**
 * A packed matrix in the kernels' memory; `scope` as for {@linkcode WasmArray}.
 *
 * f16 weights are stored as their exact f32 widening (`stored` is `"f32"`): shipped WebAssembly
 * SIMD has no half-precision conversion, so a kernel reading f16 would decode each weight with
 * integer shifts and a subnormal branch in its inner loop, where bf16's widening is one shift.
 * The values are the f16-rounded ones, the same the WebGPU backend holds, so both backends
 * compute on identical weights; the memory is f32's.
 */
class WasmMatrix implements PackedMatrix {
  readonly stored: BDtype;
  constructor(
    readonly ptr: number,
    readonly k: number,
    readonly n: number,
    readonly dtype: WeightDtype,
    readonly scope: WasmScope | null,
  ) {
    this.stored = dtype === "bf16" ? "bf16" : "f32";
  }
}

/** Packs `data` into the kernels' memory as `dtype` stores it (f16: rounded, kept in f32). */
function packed(kernels: Kernels, data: Float32Array, k: number, n: number, dtype: WeightDtype) {
  if (dtype !== "f32" && dtype !== "bf16" && dtype !== "f16") {
    throw new KernelError(`uploadMatrix: unknown dtype ${dtype} (use "f32", "bf16" or "f16")`);
  }
  if (dtype === "f16") return kernels.uploadPacked(roundToF16(data, k, n), k, n, "f32");
  return kernels.uploadPacked(data, k, n, dtype);
}

/**
 * {@linkcode Backend} on the WebAssembly SIMD kernels, over one shared memory (up to 4 GiB) and
 * worker threads.
 *
 * @example
 * ```ts
 * import { WasmBackend } from "./wasm_backend.ts";
 * const backend = await WasmBackend.load({ threads: 1 });
 * const W = backend.uploadMatrix(new Float32Array([1, 0, 0, 1, 1, 1]), 2, 3); // [2, 3]
 * using scope = backend.scope();
 * const a = scope.upload(new Float32Array([2, 3])), c = scope.alloc(3);
 * backend.matmul(a, W, c, 1);
 * await backend.read(c); // Float32Array [2, 3, 5]
 * ```
 */
export class WasmBackend implements Backend {
  /**
   * The kernels (raw byte offsets); for kernel-level tests and benchmarks only.
   * @internal
   */
  readonly kernels: Kernels;
  readonly #scopes: WasmScope[] = [];

  private constructor(kernels: Kernels) {
    this.kernels = kernels;
  }

  /** Loads the kernel module (once per process) and starts the worker threads. */
  static async load(opts: LoadOptions = {}): Promise<WasmBackend> {
    return new WasmBackend(await Kernels.load(opts));
  }

  /** Operations run as they are called: host reads settle at once. */
  get eager(): boolean {
    return true;
  }

  /** Threads in use, counting the calling thread. */
  get threads(): number {
    return this.kernels.threads;
  }

  /** Whether the relaxed-SIMD build is in use. */
  get relaxedSimd(): boolean {
    return this.kernels.relaxedSimd;
  }

  /** Bytes of WebAssembly memory reserved (it grows as needed and never shrinks). */
  get memoryBytes(): number {
    return this.kernels.memory.buffer.byteLength;
  }

  /** Bytes of WebAssembly memory allocated (weights and open scopes). */
  get bytesInUse(): number {
    return this.kernels.bytesInUse;
  }

  /** Stops the worker threads; the backend keeps working on the calling thread alone. */
  close(): void {
    this.kernels.close();
  }

  /** The same as {@linkcode WasmBackend.close} (for `using backend = await WasmBackend.load()`). */
  [Symbol.dispose](): void {
    this.close();
  }

  scope(): Scope {
    const s = new WasmScope(this, this.kernels.mark(), this.#scopes.length);
    this.#scopes.push(s);
    return s;
  }

  /** @internal Allocation for a scope (only the innermost open one may allocate). */
  allocIn(scope: WasmScope, n: number): DeviceArray {
    if (!scope.open) throw new KernelError("alloc on a scope that was already disposed");
    if (this.#scopes.at(-1) !== scope) {
      throw new KernelError(
        "alloc on an outer scope while an inner one is open: allocate from the innermost scope " +
          "(or dispose the inner one first), so that lifetimes nest",
      );
    }
    return new WasmArray(this.kernels.alloc(n), n, scope);
  }

  /** @internal A packed matrix in a scope (only the innermost open one may allocate). */
  matrixIn(
    scope: WasmScope,
    data: Float32Array,
    k: number,
    n: number,
    dtype: WeightDtype,
  ): PackedMatrix {
    this.allocIn(scope, 0); // the same checks as any allocation
    return new WasmMatrix(packed(this.kernels, data, k, n, dtype), k, n, dtype, scope);
  }

  /** @internal Disposes a scope and every scope opened inside it. */
  disposeScope(scope: WasmScope): void {
    if (!scope.open) return;
    while (this.#scopes.length > scope.depth) this.#scopes.pop()!.open = false;
    this.kernels.release(scope.mark);
  }

  #ptr(x: DeviceArray): number {
    if (!(x instanceof WasmArray)) {
      throw new KernelError("expected a device array of this backend (from scope.alloc/upload)");
    }
    if (x.scope && !x.scope.open) {
      throw new KernelError("a device array was used after its scope was disposed");
    }
    return x.ptr;
  }

  #matrix(m: PackedMatrix): WasmMatrix {
    if (!(m instanceof WasmMatrix)) {
      throw new KernelError("expected a packed matrix of this backend (from uploadMatrix)");
    }
    if (m.scope && !m.scope.open) {
      throw new KernelError("a packed matrix was used after its scope was disposed");
    }
    return m;
  }

  #permanent(): void {
    if (this.#scopes.length > 0) {
      throw new KernelError(
        "permanent uploads (weights) must happen while no scope is open; upload into the scope",
      );
    }
  }

  upload(data: Float32Array): DeviceArray {
    this.#permanent();
    const ptr = this.kernels.alloc(data.length);
    this.kernels.write(ptr, data);
    return new WasmArray(ptr, data.length, null);
  }

  uploadMatrix(data: Float32Array, k: number, n: number, dtype: WeightDtype = "f32"): PackedMatrix {
    this.#permanent();
    return new WasmMatrix(packed(this.kernels, data, k, n, dtype), k, n, dtype, null);
  }

  // Host reads compute synchronously, as the kernels always have, and return settled promises
  // (see `settled`): the values are taken when the call is made.
  readMatrix(m: PackedMatrix): Promise<Float32Array> {
    return settled(() => {
      const w = this.#matrix(m);
      return this.kernels.downloadPacked(w.ptr, w.k, w.n, w.stored);
    });
  }

  read(x: DeviceArray): Promise<Float32Array> {
    return settled(() => this.readNow(x));
  }

  readNow(x: DeviceArray): Float32Array {
    return this.kernels.read(this.#ptr(x), x.length);
  }

  readInto(x: DeviceArray, out: Float32Array, offset = 0): Promise<void> {
    return settled(() => {
      if (!Number.isInteger(offset) || offset < 0 || offset + x.length > out.length) {
        throw new KernelError(
          `readInto: ${x.length} values at offset ${offset} do not fit an array of ${out.length}`,
        );
      }
      this.kernels.readInto(this.#ptr(x), x.length, out, offset);
    });
  }

  write(x: DeviceArray, data: Float32Array): void {
    if (data.length > x.length) {
      throw new KernelError(`write of ${data.length} floats into a device array of ${x.length}`);
    }
    this.kernels.write(this.#ptr(x), data);
  }

  #rowsFit(x: DeviceArray, rows: number, cols: number, stride: number, what: string): void {
    if (rows > 0 && (rows - 1) * stride + cols > x.length) {
      throw new KernelError(
        `${what}: ${rows} rows of ${cols} floats, ${stride} apart, do not fit ${x.length} floats`,
      );
    }
  }

  readRows(
    x: DeviceArray,
    rows: number,
    cols: number,
    stride: number,
  ): Promise<Float32Array> {
    return settled(() => {
      this.#rowsFit(x, rows, cols, stride, "readRows");
      return this.kernels.readStrided(this.#ptr(x), rows, cols, stride);
    });
  }

  writeRows(x: DeviceArray, data: Float32Array, rows: number, cols: number, stride: number): void {
    this.#rowsFit(x, rows, cols, stride, "writeRows");
    this.kernels.writeStrided(this.#ptr(x), data, rows, cols, stride);
  }

  copy(src: DeviceArray, dst: DeviceArray): void {
    if (src.length > dst.length) {
      throw new KernelError(`copy of ${src.length} floats into a device array of ${dst.length}`);
    }
    this.kernels.copy(this.#ptr(src), this.#ptr(dst), src.length);
  }

  copyRows(src: DeviceArray, rows: number, cols: number, stride: number, dst: DeviceArray): void {
    this.#rowsFit(src, rows, cols, stride, "copyRows source");
    this.#rowsFit(dst, rows, cols, cols, "copyRows destination");
    if (rows === 0 || cols === 0) return;
    const s = this.#ptr(src), d = this.#ptr(dst);
    if (d < s + ((rows - 1) * stride + cols) * 4 && s < d + rows * cols * 4) {
      throw new KernelError("copyRows: the source and destination overlap");
    }
    this.kernels.copyRows(s, d, rows, cols, stride);
  }

  matmul(
    a: DeviceArray,
    b: PackedMatrix,
    c: DeviceArray,
    m: number,
    opts: MatmulOptions = {},
  ): void {
    const w = this.#matrix(b);
    const lda = opts.lda ?? w.k, ldc = opts.ldc ?? w.n;
    this.#rowsFit(a, m, w.k, lda, "matmul A");
    this.#rowsFit(c, m, w.n, ldc, "matmul C");
    this.kernels.matmul(this.#ptr(a), w.ptr, this.#ptr(c), m, w.k, w.n, {
      lda,
      ldc,
      bias: opts.bias ? this.#ptr(opts.bias) : undefined,
      accumulate: opts.accumulate,
      bDtype: w.stored,
    });
  }

  layerNorm(
    x: DeviceArray,
    out: DeviceArray,
    rows: number,
    d: number,
    eps: number,
    opts: NormOptions = {},
  ): void {
    this.#rowsFit(x, rows, d, d, "layerNorm input");
    this.#rowsFit(out, rows, d, d, "layerNorm output");
    if (opts.scale) this.#rowsFit(opts.scale, rows, 1, 1, "layerNorm scale");
    this.kernels.layerNorm(this.#ptr(x), this.#ptr(out), rows, d, eps, {
      scale: opts.scale && this.#ptr(opts.scale),
    });
  }

  rmsNorm(
    x: DeviceArray,
    out: DeviceArray,
    rows: number,
    d: number,
    eps: number,
    opts: NormOptions = {},
  ): void {
    this.#rowsFit(x, rows, d, d, "rmsNorm input");
    this.#rowsFit(out, rows, d, d, "rmsNorm output");
    if (opts.scale) this.#rowsFit(opts.scale, rows, 1, 1, "rmsNorm scale");
    this.kernels.rmsNorm(
      this.#ptr(x),
      this.#ptr(out),
      rows,
      d,
      eps,
      opts.scale && this.#ptr(opts.scale),
    );
  }

  affineRows(
    x: DeviceArray,
    out: DeviceArray,
    rows: number,
    d: number,
    w: DeviceArray,
    b?: DeviceArray,
  ): void {
    this.#rowsFit(x, rows, d, d, "affineRows input");
    this.#rowsFit(out, rows, d, d, "affineRows output");
    this.#rowsFit(w, 1, d, d, "affineRows weight");
    if (b) this.#rowsFit(b, 1, d, d, "affineRows bias");
    this.kernels.affineRows(this.#ptr(x), this.#ptr(out), rows, d, this.#ptr(w), b && this.#ptr(b));
  }

  jumpRelu(x: DeviceArray, threshold: DeviceArray, out: DeviceArray, rows: number, n: number) {
    this.#rowsFit(x, rows, n, n, "jumpRelu input");
    this.#rowsFit(out, rows, n, n, "jumpRelu output");
    this.#rowsFit(threshold, 1, n, n, "jumpRelu threshold");
    this.kernels.jumpRelu(this.#ptr(x), this.#ptr(threshold), this.#ptr(out), rows, n);
  }

  gatedRelu(gateMag: DeviceArray, out: DeviceArray, rows: number, n: number): void {
    this.#rowsFit(gateMag, rows, 2 * n, 2 * n, "gatedRelu input");
    this.#rowsFit(out, rows, n, n, "gatedRelu output");
    this.kernels.gatedRelu(this.#ptr(gateMag), this.#ptr(out), rows, n);
  }

  topkRows(x: DeviceArray, out: DeviceArray, rows: number, n: number, k: number): void {
    if (!Number.isInteger(k) || k < 1 || k > n) {
      throw new KernelError(`topkRows: k must be an integer in [1, ${n}], got ${k}`);
    }
    this.#rowsFit(x, rows, n, n, "topkRows input");
    this.#rowsFit(out, rows, n, n, "topkRows output");
    const a = this.#ptr(x), o = this.#ptr(out), bytes = rows * n * 4;
    if (rows > 0 && a < o + bytes && o < a + bytes) {
      throw new KernelError("topkRows: x and out overlap; give the result its own array");
    }
    this.kernels.topkRows(a, o, rows, n, k);
  }

  activation(act: Activation, x: DeviceArray, out: DeviceArray): void {
    this.#rowsFit(out, 1, x.length, 0, "activation output");
    // gelu_new keeps its own kernel (GPT-2's path); the values are the same either way.
    if (act === "gelu_new") this.kernels.geluNew(this.#ptr(x), this.#ptr(out), x.length);
    else this.kernels.activation(act, this.#ptr(x), this.#ptr(out), x.length);
  }

  gatedActivation(
    act: Activation,
    gateUp: DeviceArray,
    out: DeviceArray,
    rows: number,
    dMlp: number,
  ): void {
    this.#rowsFit(gateUp, rows, 2 * dMlp, 2 * dMlp, "gatedActivation input");
    this.#rowsFit(out, rows, dMlp, dMlp, "gatedActivation output");
    this.kernels.gatedActivation(act, this.#ptr(gateUp), this.#ptr(out), rows, dMlp);
  }

  activationBackward(act: Activation, x: DeviceArray, dy: DeviceArray, dx: DeviceArray): void {
    if (dy.length !== x.length) {
      throw new KernelError(
        `activationBackward: ${dy.length} gradients for ${x.length} activations`,
      );
    }
    this.#rowsFit(dx, 1, x.length, 0, "activationBackward dx");
    const xp = this.#ptr(x), dyp = this.#ptr(dy), dxp = this.#ptr(dx);
    this.#sameOrApart(dxp, xp, x.length, "activationBackward: dx and x");
    this.#sameOrApart(dxp, dyp, x.length, "activationBackward: dx and dy");
    this.kernels.activationBackward(act, xp, dyp, dxp, x.length);
  }

  gatedActivationBackward(
    act: Activation,
    gateUp: DeviceArray,
    dOut: DeviceArray,
    dGateUp: DeviceArray,
    rows: number,
    dMlp: number,
  ): void {
    this.#rowsFit(gateUp, rows, 2 * dMlp, 2 * dMlp, "gatedActivationBackward gateUp");
    this.#rowsFit(dOut, rows, dMlp, dMlp, "gatedActivationBackward dOut");
    this.#rowsFit(dGateUp, rows, 2 * dMlp, 2 * dMlp, "gatedActivationBackward dGateUp");
    const gp = this.#ptr(gateUp), op = this.#ptr(dOut), dp = this.#ptr(dGateUp);
    const n = rows * 2 * dMlp;
    this.#sameOrApart(dp, gp, n, "gatedActivationBackward: dGateUp and gateUp");
    if (dp < op + rows * dMlp * 4 && op < dp + n * 4) {
      throw new KernelError("gatedActivationBackward: dGateUp overlaps dOut");
    }
    this.kernels.gatedActivationBackward(act, gp, op, dp, rows, dMlp);
  }

  /** An elementwise output over n floats at `out` must be the input at `inp` or apart from it. */
  #sameOrApart(out: number, inp: number, n: number, what: string): void {
    if (out !== inp && out < inp + n * 4 && inp < out + n * 4) {
      throw new KernelError(`${what} overlap: pass the same array (in place) or disjoint ones`);
    }
  }

  rotary(x: DeviceArray, cs: DeviceArray, l: RotaryLayout): void {
    this.#rowsFit(x, l.rows, l.nHeads * l.dHead, l.stride, "rotary rows");
    this.#rowsFit(cs, l.rows, l.rotaryDim, l.rotaryDim, "rotary cos|sin rows");
    this.kernels.rotary(
      this.#ptr(x),
      l.stride,
      l.rows,
      l.nHeads,
      l.dHead,
      l.rotaryDim,
      this.#ptr(cs),
    );
  }

  headRmsNorm(
    x: DeviceArray,
    w: DeviceArray,
    l: HeadLayout,
    eps: number,
    opts: NormOptions = {},
  ): void {
    this.#rowsFit(x, l.rows, l.nHeads * l.dHead, l.stride, "headRmsNorm rows");
    this.#rowsFit(w, 1, l.nHeads * l.dHead, l.nHeads * l.dHead, "headRmsNorm weight");
    if (opts.scale) this.#rowsFit(opts.scale, l.rows, l.nHeads, l.nHeads, "headRmsNorm scale");
    const scale = opts.scale ? this.#ptr(opts.scale) : 0;
    const x0 = this.#ptr(x);
    this.kernels.headRmsNorm(x0, l.stride, l.rows, l.nHeads, l.dHead, this.#ptr(w), eps, scale);
  }

  headRmsNormBackward(
    x: DeviceArray,
    grad: DeviceArray,
    w: DeviceArray,
    l: HeadLayout & { gradStride: number },
    eps: number,
  ): void {
    const width = l.nHeads * l.dHead;
    this.#rowsFit(x, l.rows, width, l.stride, "headRmsNormBackward input");
    this.#rowsFit(grad, l.rows, width, l.gradStride, "headRmsNormBackward gradient");
    this.#rowsFit(w, 1, width, width, "headRmsNormBackward weight");
    this.kernels.headRmsNormBackward(
      this.#ptr(x),
      l.stride,
      this.#ptr(grad),
      l.gradStride,
      l.rows,
      l.nHeads,
      l.dHead,
      this.#ptr(w),
      eps,
    );
  }

  softcap(x: DeviceArray, out: DeviceArray, cap: number): void {
    if (out.length < x.length) {
      throw new KernelError(`softcap of ${x.length} floats into ${out.length}`);
    }
    const xp = this.#ptr(x), op = this.#ptr(out);
    this.#sameOrApart(op, xp, x.length, "softcap: out and x");
    this.kernels.softcap(xp, op, x.length, checkCap(cap, "softcap"));
  }

  softcapBackward(x: DeviceArray, dy: DeviceArray, dx: DeviceArray, cap: number): void {
    if (dy.length !== x.length || dx.length < x.length) {
      throw new KernelError(
        `softcapBackward of ${x.length} and ${dy.length} floats into ${dx.length}`,
      );
    }
    const xp = this.#ptr(x), yp = this.#ptr(dy), dp = this.#ptr(dx);
    this.#sameOrApart(dp, xp, x.length, "softcapBackward: dx and x");
    this.#sameOrApart(dp, yp, x.length, "softcapBackward: dx and dy");
    this.kernels.softcapBackward(xp, yp, dp, x.length, checkCap(cap, "softcap"));
  }

  add(a: DeviceArray, b: DeviceArray, out: DeviceArray): void {
    if (b.length !== a.length || out.length < a.length) {
      throw new KernelError(`add of ${a.length} and ${b.length} floats into ${out.length}`);
    }
    this.kernels.add(this.#ptr(a), this.#ptr(b), this.#ptr(out), a.length);
  }

  sumHeads(
    x: DeviceArray,
    out: DeviceArray,
    rows: number,
    heads: number,
    d: number,
    bias?: DeviceArray,
  ): void {
    this.#rowsFit(x, rows, heads * d, heads * d, "sumHeads input");
    this.#rowsFit(out, rows, d, d, "sumHeads output");
    if (bias) this.#rowsFit(bias, 1, d, d, "sumHeads bias");
    const xp = this.#ptr(x), op = this.#ptr(out);
    if (op < xp + rows * heads * d * 4 && xp < op + rows * d * 4) {
      throw new KernelError("sumHeads: the output overlaps the input");
    }
    this.kernels.sumHeads(xp, op, rows, heads, d, bias ? this.#ptr(bias) : 0);
  }

  #attention(a: AttentionArgs) {
    const nK = a.qStart + a.nQ, width = a.nHeads * a.dHead;
    const nKv = a.nKeyValueHeads ?? a.nHeads;
    if (!Number.isInteger(nKv) || nKv < 1 || a.nHeads % nKv !== 0) {
      throw new KernelError(
        `attention: ${a.nHeads} heads do not group into ${nKv} key/value heads`,
      );
    }
    this.#rowsFit(a.q, a.nQ, width, a.stride, "attention q");
    this.#rowsFit(a.k, nK, nKv * a.dHead, a.stride, "attention k");
    this.#rowsFit(a.v, nK, nKv * a.dHead, a.stride, "attention v");
    this.#rowsFit(a.z, a.nQ, width, a.zStride, "attention z");
    return {
      q: this.#ptr(a.q),
      k: this.#ptr(a.k),
      v: this.#ptr(a.v),
      stride: a.stride,
      z: this.#ptr(a.z),
      zStride: a.zStride,
      nQ: a.nQ,
      qStart: a.qStart,
      nHeads: a.nHeads,
      dHead: a.dHead,
      scale: a.scale,
      group: a.nHeads / (a.nKeyValueHeads ?? a.nHeads),
      kStart: a.kStart ?? 0,
      window: checkWindow(a.window),
      softcap: checkCap(a.softcap, "attention softcap"),
    };
  }

  #pattern(a: AttentionArgs, p: DeviceArray, what: string): number {
    const need = a.nHeads * a.nQ * (a.qStart + a.nQ);
    if (p.length < need) {
      throw new KernelError(`${what} needs ${need} floats, the array has ${p.length}`);
    }
    return this.#ptr(p);
  }

  attention(a: AttentionArgs, pattern?: DeviceArray): void {
    const args = this.#attention(a);
    this.kernels.attention({
      ...args,
      pattern: pattern ? this.#pattern(a, pattern, "attention pattern") : undefined,
    });
  }

  attentionScores(a: AttentionArgs, scores: DeviceArray): void {
    this.kernels.attentionScores(this.#attention(a), this.#pattern(a, scores, "scores"));
  }

  softmaxRows(
    scores: DeviceArray,
    pattern: DeviceArray,
    nHeads: number,
    nQ: number,
    qStart: number,
    opts: CausalOptions = {},
  ): void {
    const need = nHeads * nQ * (qStart + nQ);
    if (scores.length < need || pattern.length < need) {
      throw new KernelError(`softmaxRows needs ${need} floats of scores and of pattern`);
    }
    this.kernels.softmaxRows(this.#ptr(scores), this.#ptr(pattern), nHeads, nQ, qStart, {
      ...opts,
      window: checkWindow(opts.window),
    });
  }

  attentionApply(a: AttentionArgs, pattern: DeviceArray, opts: { causal?: boolean } = {}): void {
    const args = this.#attention(a);
    this.kernels.attentionApply({
      ...args,
      pattern: this.#pattern(a, pattern, "pattern"),
      causal: opts.causal,
    });
  }

  logSumExpRows(
    x: DeviceArray,
    rows: number,
    n: number,
    ld: number = n,
  ): Promise<Float64Array> {
    return settled(() => {
      this.#rowsFit(x, rows, n, ld, "logSumExpRows");
      return this.kernels.logSumExpRows(this.#ptr(x), rows, n, ld);
    });
  }

  takeAlongRows(x: DeviceArray, n: number, index: Int32Array): Promise<Float32Array> {
    return settled(() => {
      this.#rowsFit(x, index.length, n, n, "takeAlongRows");
      const view = this.kernels.view(this.#ptr(x), index.length * n);
      return Float32Array.from(index, (j, r) => {
        if (!(j >= 0 && j < n)) {
          throw new KernelError(`takeAlongRows: index ${j} outside [0, ${n})`);
        }
        return view[r * n + j];
      });
    });
  }

  argmaxRows(
    x: DeviceArray,
    rows: number,
    n: number,
    ld: number = n,
  ): Promise<Int32Array> {
    return settled(() => {
      this.#rowsFit(x, rows, n, ld, "argmaxRows");
      return this.kernels.argmaxRows(this.#ptr(x), rows, n, ld);
    });
  }

  // ---- Backward passes ----

  matmulTransposed(
    a: DeviceArray,
    b: PackedMatrix,
    c: DeviceArray,
    m: number,
    opts: Omit<MatmulOptions, "bias"> = {},
  ): void {
    const w = this.#matrix(b);
    const lda = opts.lda ?? w.n, ldc = opts.ldc ?? w.k;
    this.#rowsFit(a, m, w.n, lda, "matmulTransposed A");
    this.#rowsFit(c, m, w.k, ldc, "matmulTransposed C");
    this.kernels.matmulBT(this.#ptr(a), w.ptr, this.#ptr(c), m, w.k, w.n, {
      lda,
      ldc,
      accumulate: opts.accumulate,
      bDtype: w.stored,
    });
  }

  normBackward(
    x: DeviceArray,
    grad: DeviceArray,
    dx: DeviceArray | null,
    rows: number,
    d: number,
    eps: number,
    opts: NormBackwardOptions = {},
  ): void {
    this.#rowsFit(x, rows, d, d, "normBackward input");
    this.#rowsFit(grad, rows, d, d, "normBackward gradient");
    if (dx) this.#rowsFit(dx, rows, d, d, "normBackward dx");
    if (opts.scaleGrad) this.#rowsFit(opts.scaleGrad, rows, 1, 1, "normBackward scale gradient");
    if (opts.scaleGiven && !opts.scaleGrad) {
      throw new KernelError("normBackward: scaleGiven needs the scaleGrad array");
    }
    this.kernels.normBackward(this.#ptr(x), this.#ptr(grad), dx ? this.#ptr(dx) : 0, rows, d, eps, {
      center: opts.center,
      dScale: opts.scaleGrad && this.#ptr(opts.scaleGrad),
      scaleGiven: opts.scaleGiven,
      accumulate: opts.accumulate,
    });
  }

  #attentionGrad(a: AttentionGradArgs) {
    const nKv = a.nKeyValueHeads ?? a.nHeads;
    if (!Number.isInteger(nKv) || nKv < 1 || a.nHeads % nKv !== 0) {
      throw new KernelError(`attention backward: ${a.nHeads} heads do not group into ${nKv}`);
    }
    const qw = a.nHeads * a.dHead, kw = nKv * a.dHead;
    this.#rowsFit(a.q, a.T, qw, a.stride, "attention backward q");
    this.#rowsFit(a.k, a.T, kw, a.stride, "attention backward k");
    this.#rowsFit(a.v, a.T, kw, a.stride, "attention backward v");
    this.#rowsFit(a.dz, a.T, qw, a.dzStride, "attention backward dz");
    this.#rowsFit(a.dq, a.T, qw, a.dStride, "attention backward dq");
    this.#rowsFit(a.dk, a.T, kw, a.dStride, "attention backward dk");
    this.#rowsFit(a.dv, a.T, kw, a.dStride, "attention backward dv");
    return {
      group: a.nHeads / nKv,
      kStart: a.kStart ?? 0,
      window: checkWindow(a.window),
      softcap: checkCap(a.softcap, "attention softcap"),
    };
  }

  #square(x: DeviceArray, nHeads: number, T: number, what: string): number {
    if (x.length < nHeads * T * T) {
      throw new KernelError(`${what} needs ${nHeads * T * T} floats, the array has ${x.length}`);
    }
    return this.#ptr(x);
  }

  attentionGradPattern(
    a: AttentionGradArgs,
    pattern: DeviceArray,
    dPattern: DeviceArray,
    opts: { causal?: boolean; fullRows?: boolean } = {},
  ): void {
    const { group, kStart, window } = this.#attentionGrad(a);
    this.kernels.attentionGradPattern({
      window,
      dz: this.#ptr(a.dz),
      dzStride: a.dzStride,
      v: this.#ptr(a.v),
      stride: a.stride,
      pattern: this.#square(pattern, a.nHeads, a.T, "attention backward pattern"),
      dPattern: this.#square(dPattern, a.nHeads, a.T, "attention backward dPattern"),
      dv: this.#ptr(a.dv),
      dStride: a.dStride,
      T: a.T,
      nHeads: a.nHeads,
      dHead: a.dHead,
      group,
      kStart,
      causal: opts.causal,
      fullRows: opts.fullRows,
    });
  }

  softmaxBackwardRows(
    pattern: DeviceArray,
    dPattern: DeviceArray,
    dScores: DeviceArray,
    nHeads: number,
    T: number,
  ): void {
    this.kernels.softmaxBackwardRows(
      this.#square(pattern, nHeads, T, "softmaxBackwardRows pattern"),
      this.#square(dPattern, nHeads, T, "softmaxBackwardRows dPattern"),
      this.#square(dScores, nHeads, T, "softmaxBackwardRows dScores"),
      nHeads,
      T,
    );
  }

  attentionGradQK(a: AttentionGradArgs, dScores: DeviceArray): void {
    const { group, kStart, window, softcap } = this.#attentionGrad(a);
    this.kernels.attentionGradQK({
      window,
      softcap,
      dScores: this.#square(dScores, a.nHeads, a.T, "attention backward dScores"),
      q: this.#ptr(a.q),
      k: this.#ptr(a.k),
      stride: a.stride,
      dq: this.#ptr(a.dq),
      dk: this.#ptr(a.dk),
      dStride: a.dStride,
      T: a.T,
      nHeads: a.nHeads,
      dHead: a.dHead,
      scale: a.scale,
      group,
      kStart,
    });
  }

  crossEntropyGradRows(
    x: DeviceArray,
    rows: number,
    n: number,
    coef: Float32Array,
    target: Int32Array,
    out: DeviceArray,
  ): Promise<Float64Array> {
    return settled(() => {
      this.#rowsFit(x, rows, n, n, "crossEntropyGradRows input");
      this.#rowsFit(out, rows, n, n, "crossEntropyGradRows output");
      return this.kernels.crossEntropyGradRows(
        this.#ptr(x),
        rows,
        n,
        coef,
        target,
        this.#ptr(out),
      );
    });
  }
}

/**
 * `f()` as a settled promise: its value, or its error as a rejection, so a host read reports a bad
 * argument the same way whether the backend computes now (here) or later (a GPU).
 */
function settled<T>(f: () => T): Promise<T> {
  try {
    return Promise.resolve(f());
  } catch (e) {
    return Promise.reject(e);
  }
}

/** A sliding window: absent or 0 (none), else a positive integer. */
function checkWindow(w: number | undefined): number {
  if (w === undefined || w === 0) return 0;
  if (!Number.isSafeInteger(w) || w < 0) {
    throw new KernelError(`attention window must be a positive integer (0: none), got ${w}`);
  }
  return w;
}

/** A softcap: absent or 0 (none), else a positive finite number. */
function checkCap(c: number | undefined, what: string): number {
  if (c === undefined || c === 0) return 0;
  if (!(c > 0) || !Number.isFinite(c)) {
    throw new KernelError(`${what} must be a positive finite number (0: none), got ${c}`);
  }
  return c;
}
