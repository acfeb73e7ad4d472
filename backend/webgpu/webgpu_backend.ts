/**
 * The WebGPU backend: {@linkcode Backend} over WGSL kernels. Device arrays are GPU buffers
 * (one per allocation, released with their scope); weights live in GPU buffers and never pass
 * through WebAssembly memory, so the 4 GiB ceiling of wasm32 does not apply (a matrix larger
 * than one storage binding is stored as column blocks). Operations enqueue; a host read submits
 * what is pending and resolves once the GPU has run it.
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
import { InputError, KernelError } from "../../core/errors.ts";
import { decodeFloats } from "../../core/dtype.ts";
import { checkF16Range } from "../f16.ts";
import { GpuDevice, type GpuLoadOptions } from "./device.ts";
import { bind, type Bound, GpuArray, GpuMatrix, GpuStore, packBf16, packF16 } from "./arrays.ts";
import { matmul } from "./matmul.ts";
import * as ew from "./elementwise.ts";
import { norm, normBackward } from "./norm.ts";
import * as att from "./attention.ts";
import * as attBack from "./attention_backward.ts";
import * as rows_ from "./rows.ts";
import * as gemma from "./gemma.ts";
import * as sae from "./sae.ts";

export type { GpuLoadOptions } from "./device.ts";

/** Options of {@linkcode WebGpuBackend.load}. */
export interface WebGpuLoadOptions extends GpuLoadOptions {
  /**
   * An eager CPU backend for the synchronous helpers' products of host arrays
   * ({@linkcode Backend.host}; `loadBackend("webgpu")` gives a WebAssembly one). Once loaded, the
   * WebGPU backend owns it and closes it with itself; if loading fails it is left to the caller.
   */
  host?: Backend;
}

/** A scope: its buffers go when it is disposed (directly or by an enclosing scope). */
class GpuScope implements Scope {
  open = true;
  readonly stores: GpuStore[] = [];
  constructor(readonly backend: WebGpuBackend, readonly depth: number) {}

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

/**
 * {@linkcode Backend} on WebGPU. Load it with {@linkcode WebGpuBackend.load}; it throws
 * `GpuUnavailableError` where there is no adapter.
 *
 * @example
 * ```ts ignore
 * import { WebGpuBackend } from "./webgpu_backend.ts";
 * const backend = await WebGpuBackend.load();
 * const W = backend.uploadMatrix(new Float32Array([1, 0, 0, 1, 1, 1]), 2, 3); // [2, 3]
 * using scope = backend.scope();
 * const a = scope.upload(new Float32Array([2, 3])), c = scope.alloc(3);
 * backend.matmul(a, W, c, 1);
 * await backend.read(c); // Float32Array [2, 3, 5]
 * ```
 */
export class WebGpuBackend implements Backend {
  /** The device, its limits and command queue (for tests and benchmarks). */
  readonly #gpu: GpuDevice;
  readonly #scopes: GpuScope[] = [];
  readonly #dummy: Bound;
  #permanentBytes = 0;
  /** The eager CPU backend of the synchronous helpers' products, when one was given. */
  readonly host: Backend | undefined;

  private constructor(gpu: GpuDevice, host: Backend | undefined) {
    this.#gpu = gpu;
    this.host = host;
    const store = new GpuStore(gpu.createBuffer(16), null);
    this.#dummy = bind(gpu, new GpuArray(store, 0, 4));
  }

  /**
   * Requests a WebGPU adapter and device (with the adapter's largest buffer limits).
   * @throws {GpuUnavailableError} no WebGPU, no adapter, or only a software one with
   * `requireHardware`.
   * @throws {InputError} a `host` that is not eager.
   */
  static async load(opts: WebGpuLoadOptions = {}): Promise<WebGpuBackend> {
    if (opts.host && !opts.host.eager) {
      throw new InputError("WebGpuBackend.load: host must be an eager backend (WebAssembly)");
    }
    return new WebGpuBackend(await GpuDevice.load(opts), opts.host);
  }

  /** One host thread drives the GPU. */
  get threads(): number {
    return 1;
  }

  /** The adapter's description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  get adapter(): string {
    return this.#gpu.description;
  }

  /** Bytes of GPU memory held by weights (uploads outside any scope). */
  get weightBytes(): number {
    return this.#permanentBytes;
  }

  /** Releases the GPU device and every buffer, and closes the {@linkcode WebGpuBackend.host}. */
  close(): void {
    this.#gpu.destroy();
    this.host?.close();
  }

  /** The same as {@linkcode WebGpuBackend.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Waits until the GPU has run every enqueued operation (and reports a lost device). */
  finish(): Promise<void> {
    return this.#gpu.finish();
  }

  scope(): Scope {
    const s = new GpuScope(this, this.#scopes.length);
    this.#scopes.push(s);
    return s;
  }

  #innermost(scope: GpuScope): void {
    if (!scope.open) throw new KernelError("alloc on a scope that was already disposed");
    if (this.#scopes.at(-1) !== scope) {
      throw new KernelError(
        "alloc on an outer scope while an inner one is open: allocate from the innermost scope " +
          "(or dispose the inner one first), so that lifetimes nest",
      );
    }
  }

  /** @internal Allocation for a scope (only the innermost open one may allocate). */
  allocIn(scope: GpuScope, n: number): DeviceArray {
    this.#innermost(scope);
    checkCount(n, "alloc");
    const store = new GpuStore(this.#gpu.createBuffer(n * 4), scope);
    scope.stores.push(store);
    return new GpuArray(store, 0, n);
  }

  /** @internal A packed matrix in a scope. */
  matrixIn(
    scope: GpuScope,
    data: Float32Array,
    k: number,
    n: number,
    dtype: WeightDtype,
  ): PackedMatrix {
    this.#innermost(scope);
    const m = this.#packed(data, k, n, dtype, scope);
    scope.stores.push(...m.blocks);
    return m;
  }

  /** @internal Disposes a scope and every scope opened inside it. */
  disposeScope(scope: GpuScope): void {
    if (!scope.open) return;
    this.#gpu.flush(); // recorded commands may still use these buffers
    while (this.#scopes.length > scope.depth) {
      const s = this.#scopes.pop()!;
      s.open = false;
      for (const st of s.stores) {
        st.alive = false;
        st.buffer.destroy(); // freed once the submitted work using it is done
      }
    }
  }

  #permanent(): void {
    if (this.#scopes.length > 0) {
      throw new KernelError(
        "permanent uploads (weights) must happen while no scope is open; upload into the scope",
      );
    }
  }

  #packed(
    data: Float32Array,
    k: number,
    n: number,
    dtype: WeightDtype,
    owner: GpuScope | null,
  ): GpuMatrix {
    checkCount(k, "uploadMatrix k");
    checkCount(n, "uploadMatrix n");
    if (data.length !== k * n) {
      throw new KernelError(`uploadMatrix: ${data.length} values for a [${k}, ${n}] matrix`);
    }
    if (dtype !== "f32" && dtype !== "bf16" && dtype !== "f16") {
      throw new KernelError(`uploadMatrix: unknown dtype ${dtype} (use "f32", "bf16" or "f16")`);
    }
    if (dtype === "f16") checkF16Range(data, k, n); // before anything is allocated
    // columns per block: a block's [k, cols] storage must fit one binding (multiples of 64)
    const perCol = dtype === "f32" ? 4 : 2;
    const fit = Math.floor(this.#gpu.maxBinding / Math.max(1, k * perCol));
    const blockCols = n <= fit ? Math.max(n, 1) : Math.floor(fit / 64) * 64;
    if (blockCols < 1) {
      throw new KernelError(
        `uploadMatrix: one column of ${k} rows exceeds a WebGPU binding (${this.#gpu.maxBinding} bytes)`,
      );
    }
    const blocks: GpuStore[] = [];
    try {
      for (let c0 = 0; c0 < n || (n === 0 && c0 === 0); c0 += blockCols) {
        const cols = Math.min(blockCols, n - c0);
        let bytes: Uint32Array | Float32Array;
        if (dtype === "bf16") bytes = packBf16(data, k, n, c0, cols);
        else if (dtype === "f16") bytes = packF16(data, k, n, c0, cols);
        else if (cols === n) bytes = data;
        else {
          bytes = new Float32Array(k * cols);
          for (let r = 0; r < k; r++) {
            bytes.set(data.subarray(r * n + c0, r * n + c0 + cols), r * cols);
          }
        }
        const store = new GpuStore(this.#gpu.createBuffer(bytes.byteLength), owner);
        blocks.push(store);
        if (bytes.byteLength > 0) this.#gpu.write(store.buffer, 0, bytes);
        if (n === 0) break;
      }
    } catch (e) {
      for (const b of blocks) b.buffer.destroy(); // nothing half-allocated
      throw e;
    }
    if (!owner) this.#permanentBytes += blocks.reduce((s, b) => s + b.buffer.size, 0);
    return new GpuMatrix(k, n, dtype, blockCols, blocks, owner);
  }

  #array(x: DeviceArray): GpuArray {
    if (!(x instanceof GpuArray)) {
      throw new KernelError("expected a device array of this backend (from scope.alloc/upload)");
    }
    x.store.check("device array");
    return x;
  }

  #bind(x: DeviceArray, floats?: number): Bound {
    const a = this.#array(x);
    return bind(this.#gpu, a, floats ?? a.length);
  }

  #matrix(m: PackedMatrix): GpuMatrix {
    if (!(m instanceof GpuMatrix)) {
      throw new KernelError("expected a packed matrix of this backend (from uploadMatrix)");
    }
    if (m.owner && !m.owner.open) {
      throw new KernelError("a packed matrix was used after its scope was disposed");
    }
    return m;
  }

  upload(data: Float32Array): DeviceArray {
    this.#permanent();
    const store = new GpuStore(this.#gpu.createBuffer(data.byteLength), null);
    this.#permanentBytes += store.buffer.size;
    const x = new GpuArray(store, 0, data.length);
    this.write(x, data);
    return x;
  }

  uploadMatrix(data: Float32Array, k: number, n: number, dtype: WeightDtype = "f32"): PackedMatrix {
    this.#permanent();
    return this.#packed(data, k, n, dtype, null);
  }

  async readMatrix(m: PackedMatrix): Promise<Float32Array> {
    const w = this.#matrix(m);
    const out = new Float32Array(w.k * w.n);
    for (let b = 0; b < w.blocks.length; b++) {
      const cols = w.cols(b), words = w.words(b), c0 = b * w.blockCols;
      if (cols <= 0) continue;
      const raw = await this.#gpu.read(w.blocks[b].buffer, 0, w.k * words * 4);
      if (w.dtype === "bf16") {
        const u = new Uint32Array(raw), f = new Uint32Array(out.buffer);
        for (let r = 0; r < w.k; r++) {
          for (let j = 0; j < cols; j++) {
            const word = u[r * words + (j >> 1)];
            f[r * w.n + c0 + j] = (j & 1) ? (word & 0xffff0000) >>> 0 : (word << 16) >>> 0;
          }
        }
      } else if (w.dtype === "f16") {
        const f = new Float32Array(w.k * words * 2); // widened exactly, with each row's padding
        decodeFloats("F16", new Uint8Array(raw), f);
        for (let r = 0; r < w.k; r++) {
          out.set(f.subarray(r * words * 2, r * words * 2 + cols), r * w.n + c0);
        }
      } else {
        const f = new Float32Array(raw);
        for (let r = 0; r < w.k; r++) {
          out.set(f.subarray(r * cols, (r + 1) * cols), r * w.n + c0);
        }
      }
    }
    return out;
  }

  async read(x: DeviceArray): Promise<Float32Array> {
    const a = this.#array(x);
    return new Float32Array(await this.#gpu.read(a.store.buffer, a.offset * 4, a.length * 4));
  }

  async readInto(x: DeviceArray, out: Float32Array, offset = 0): Promise<void> {
    if (!Number.isInteger(offset) || offset < 0 || offset + x.length > out.length) {
      throw new KernelError(
        `readInto: ${x.length} values at offset ${offset} do not fit an array of ${out.length}`,
      );
    }
    out.set(await this.read(x), offset);
  }

  write(x: DeviceArray, data: Float32Array): void {
    const a = this.#array(x);
    if (data.length > a.length) {
      throw new KernelError(`write of ${data.length} floats into a device array of ${a.length}`);
    }
    if (data.length > 0) this.#gpu.write(a.store.buffer, a.offset * 4, data);
  }

  #rowsFit(x: DeviceArray, rows: number, cols: number, stride: number, what: string): number {
    const need = rows > 0 ? (rows - 1) * stride + cols : 0;
    if (rows > 0 && need > x.length) {
      throw new KernelError(
        `${what}: ${rows} rows of ${cols} floats, ${stride} apart, do not fit ${x.length} floats`,
      );
    }
    return need;
  }

  async readRows(
    x: DeviceArray,
    rows: number,
    cols: number,
    stride: number,
  ): Promise<Float32Array> {
    const need = this.#rowsFit(x, rows, cols, stride, "readRows");
    const out = new Float32Array(rows * cols);
    if (need === 0) return out;
    const all = await this.read(x.at(0, need));
    if (stride === cols) return all;
    for (let r = 0; r < rows; r++) out.set(all.subarray(r * stride, r * stride + cols), r * cols);
    return out;
  }

  writeRows(x: DeviceArray, data: Float32Array, rows: number, cols: number, stride: number): void {
    this.#rowsFit(x, rows, cols, stride, "writeRows");
    if (data.length < rows * cols) {
      throw new KernelError(`writeRows: ${data.length} floats for ${rows} rows of ${cols}`);
    }
    if (stride === cols) return this.write(x, data.subarray(0, rows * cols));
    for (let r = 0; r < rows; r++) {
      this.write(x.at(r * stride, cols), data.subarray(r * cols, (r + 1) * cols));
    }
  }

  copy(src: DeviceArray, dst: DeviceArray): void {
    const s = this.#array(src), d = this.#array(dst);
    if (s.length > d.length) {
      throw new KernelError(`copy of ${s.length} floats into a device array of ${d.length}`);
    }
    const bytes = s.length * 4;
    if (bytes === 0 || (s.store === d.store && s.offset === d.offset)) return;
    if (s.store === d.store) {
      // WebGPU copies never have one buffer as source and destination: bounce
      const tmp = this.#gpu.temp(bytes);
      this.#gpu.copy(s.store.buffer, s.offset * 4, tmp, 0, bytes);
      this.#gpu.copy(tmp, 0, d.store.buffer, d.offset * 4, bytes);
    } else this.#gpu.copy(s.store.buffer, s.offset * 4, d.store.buffer, d.offset * 4, bytes);
  }

  copyRows(src: DeviceArray, rows: number, cols: number, stride: number, dst: DeviceArray): void {
    this.#rowsFit(src, rows, cols, stride, "copyRows source");
    this.#rowsFit(dst, rows, cols, cols, "copyRows destination");
    if (rows === 0 || cols === 0) return;
    if (overlaps(this.#array(src), (rows - 1) * stride + cols, this.#array(dst), rows * cols)) {
      throw new KernelError("copyRows: the source and destination overlap");
    }
    // One copy command per row (dense rows are one): no pass relies on this for speed, since a
    // WebGPU pass reads its cache back to the host as it runs.
    if (stride === cols) this.copy(src.at(0, rows * cols), dst);
    else for (let r = 0; r < rows; r++) this.copy(src.at(r * stride, cols), dst.at(r * cols, cols));
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
    const na = this.#rowsFit(a, m, w.k, lda, "matmul A");
    const nc = this.#rowsFit(c, m, w.n, ldc, "matmul C");
    if (opts.bias) this.#rowsFit(opts.bias, 1, w.n, w.n, "matmul bias");
    matmul(this.#gpu, {
      a: this.#bind(a, na),
      w,
      c: this.#bind(c, nc),
      m,
      lda,
      ldc,
      bias: opts.bias && this.#bind(opts.bias, w.n),
      accumulate: opts.accumulate ?? false,
      transposed: false,
    }, this.#dummy);
  }

  layerNorm(
    x: DeviceArray,
    out: DeviceArray,
    rows: number,
    d: number,
    eps: number,
    opts: NormOptions = {},
  ): void {
    this.#norm(x, out, rows, d, eps, opts, true, "layerNorm");
  }

  rmsNorm(
    x: DeviceArray,
    out: DeviceArray,
    rows: number,
    d: number,
    eps: number,
    opts: NormOptions = {},
  ): void {
    this.#norm(x, out, rows, d, eps, opts, false, "rmsNorm");
  }

  #norm(
    x: DeviceArray,
    out: DeviceArray,
    rows: number,
    d: number,
    eps: number,
    opts: NormOptions,
    center: boolean,
    what: string,
  ): void {
    const n = this.#rowsFit(x, rows, d, d, `${what} input`);
    this.#rowsFit(out, rows, d, d, `${what} output`);
    if (opts.scale) this.#rowsFit(opts.scale, rows, 1, 1, `${what} scale`);
    if (rows === 0) return;
    norm(
      this.#gpu,
      this.#bind(x, n),
      this.#bind(out, n),
      rows,
      d,
      eps,
      center,
      opts.scale && this.#bind(opts.scale, rows),
      this.#dummy,
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
    const n = this.#rowsFit(x, rows, d, d, "affineRows input");
    this.#rowsFit(out, rows, d, d, "affineRows output");
    this.#rowsFit(w, 1, d, d, "affineRows weight");
    if (b) this.#rowsFit(b, 1, d, d, "affineRows bias");
    if (n === 0) return;
    ew.affineRows(
      this.#gpu,
      this.#bind(x, n),
      this.#bind(out, n),
      rows,
      d,
      this.#bind(w, d),
      b && this.#bind(b, d),
      this.#dummy,
    );
  }

  activation(act: Activation, x: DeviceArray, out: DeviceArray): void {
    checkActivation(act);
    this.#rowsFit(out, 1, x.length, 0, "activation output");
    if (x.length === 0) return;
    ew.activation(this.#gpu, act, this.#bind(x), this.#bind(out, x.length), x.length);
  }

  gatedActivation(
    act: Activation,
    gateUp: DeviceArray,
    out: DeviceArray,
    rows: number,
    dMlp: number,
  ): void {
    checkActivation(act);
    const n = this.#rowsFit(gateUp, rows, 2 * dMlp, 2 * dMlp, "gatedActivation input");
    const no = this.#rowsFit(out, rows, dMlp, dMlp, "gatedActivation output");
    if (no === 0) return;
    ew.gatedActivation(this.#gpu, act, this.#bind(gateUp, n), this.#bind(out, no), rows, dMlp);
  }

  activationBackward(act: Activation, x: DeviceArray, dy: DeviceArray, dx: DeviceArray): void {
    checkActivation(act);
    if (dy.length !== x.length) {
      throw new KernelError(
        `activationBackward: ${dy.length} gradients for ${x.length} activations`,
      );
    }
    this.#rowsFit(dx, 1, x.length, 0, "activationBackward dx");
    this.#sameOrApart(dx, x, x.length, "activationBackward: dx and x");
    this.#sameOrApart(dx, dy, x.length, "activationBackward: dx and dy");
    if (x.length === 0) return;
    ew.activationBackward(
      this.#gpu,
      act,
      this.#bind(x),
      this.#bind(dy),
      this.#bind(dx, x.length),
      x.length,
    );
  }

  gatedActivationBackward(
    act: Activation,
    gateUp: DeviceArray,
    dOut: DeviceArray,
    dGateUp: DeviceArray,
    rows: number,
    dMlp: number,
  ): void {
    checkActivation(act);
    const n = this.#rowsFit(gateUp, rows, 2 * dMlp, 2 * dMlp, "gatedActivationBackward gateUp");
    const no = this.#rowsFit(dOut, rows, dMlp, dMlp, "gatedActivationBackward dOut");
    this.#rowsFit(dGateUp, rows, 2 * dMlp, 2 * dMlp, "gatedActivationBackward dGateUp");
    this.#sameOrApart(dGateUp, gateUp, n, "gatedActivationBackward: dGateUp and gateUp");
    if (overlaps(this.#array(dGateUp), n, this.#array(dOut), no)) {
      throw new KernelError("gatedActivationBackward: dGateUp overlaps dOut");
    }
    if (no === 0) return;
    ew.gatedActivationBackward(
      this.#gpu,
      act,
      this.#bind(gateUp, n),
      this.#bind(dOut, no),
      this.#bind(dGateUp, n),
      rows,
      dMlp,
    );
  }

  /** An elementwise output over n floats must be the input or apart from it. */
  #sameOrApart(out: DeviceArray, inp: DeviceArray, n: number, what: string): void {
    const o = this.#array(out), i = this.#array(inp);
    if (o.store === i.store && o.offset === i.offset) return;
    if (overlaps(o, n, i, n)) {
      throw new KernelError(`${what} overlap: pass the same array (in place) or disjoint ones`);
    }
  }

  rotary(x: DeviceArray, cs: DeviceArray, l: RotaryLayout): void {
    const n = this.#rowsFit(x, l.rows, l.nHeads * l.dHead, l.stride, "rotary rows");
    const nc = this.#rowsFit(cs, l.rows, l.rotaryDim, l.rotaryDim, "rotary cos|sin rows");
    if (l.rotaryDim % 2 !== 0 || l.rotaryDim > l.dHead || l.rotaryDim < 0) {
      throw new KernelError(`rotary: rotaryDim ${l.rotaryDim} must be even and at most dHead`);
    }
    if (n === 0 || l.rotaryDim === 0) return;
    ew.rotary(
      this.#gpu,
      this.#bind(x, n),
      this.#bind(cs, nc),
      l.rows,
      l.stride,
      l.nHeads,
      l.dHead,
      l.rotaryDim,
    );
  }

  add(a: DeviceArray, b: DeviceArray, out: DeviceArray): void {
    if (b.length !== a.length || out.length < a.length) {
      throw new KernelError(`add of ${a.length} and ${b.length} floats into ${out.length}`);
    }
    if (a.length === 0) return;
    ew.add(this.#gpu, this.#bind(a), this.#bind(b), this.#bind(out, a.length), a.length);
  }

  jumpRelu(x: DeviceArray, threshold: DeviceArray, out: DeviceArray, rows: number, n: number) {
    const nx = this.#rowsFit(x, rows, n, n, "jumpRelu input");
    this.#rowsFit(out, rows, n, n, "jumpRelu output");
    this.#rowsFit(threshold, 1, n, n, "jumpRelu threshold");
    this.#sameOrApart(out, x, nx, "jumpRelu: out and x");
    if (nx === 0) return;
    sae.jumpRelu(
      this.#gpu,
      this.#bind(x, nx),
      this.#bind(threshold, n),
      this.#bind(out, nx),
      rows,
      n,
    );
  }

  gatedRelu(gateMag: DeviceArray, out: DeviceArray, rows: number, n: number): void {
    const ng = this.#rowsFit(gateMag, rows, 2 * n, 2 * n, "gatedRelu input");
    const no = this.#rowsFit(out, rows, n, n, "gatedRelu output");
    if (overlaps(this.#array(out), no, this.#array(gateMag), ng)) {
      throw new KernelError("gatedRelu: the output overlaps the input");
    }
    if (no === 0) return;
    sae.gatedRelu(this.#gpu, this.#bind(gateMag, ng), this.#bind(out, no), rows, n);
  }

  topkRows(x: DeviceArray, out: DeviceArray, rows: number, n: number, k: number): void {
    if (!Number.isInteger(k) || k < 1 || k > n) {
      throw new KernelError(`topkRows: k must be an integer in [1, ${n}], got ${k}`);
    }
    const nx = this.#rowsFit(x, rows, n, n, "topkRows input");
    this.#rowsFit(out, rows, n, n, "topkRows output");
    if (overlaps(this.#array(out), nx, this.#array(x), nx)) {
      throw new KernelError("topkRows: x and out overlap; give the result its own array");
    }
    if (nx === 0) return;
    sae.topkRows(this.#gpu, this.#bind(x, nx), this.#bind(out, nx), rows, n, k);
  }

  headRmsNorm(
    x: DeviceArray,
    w: DeviceArray,
    l: HeadLayout,
    eps: number,
    opts: NormOptions = {},
  ): void {
    const width = l.nHeads * l.dHead;
    const n = this.#rowsFit(x, l.rows, width, l.stride, "headRmsNorm input");
    this.#rowsFit(w, 1, width, width, "headRmsNorm weight");
    if (opts.scale) this.#rowsFit(opts.scale, l.rows, l.nHeads, l.nHeads, "headRmsNorm scale");
    if (n === 0 || width === 0) return;
    gemma.headRmsNorm(
      this.#gpu,
      this.#bind(x, n),
      this.#bind(w, width),
      opts.scale && this.#bind(opts.scale, l.rows * l.nHeads),
      l,
      eps,
      this.#dummy,
    );
  }

  softcap(x: DeviceArray, out: DeviceArray, cap: number): void {
    if (out.length < x.length) {
      throw new KernelError(`softcap of ${x.length} floats into ${out.length}`);
    }
    this.#sameOrApart(out, x, x.length, "softcap: out and x");
    const c = checkCap(cap, "softcap");
    if (x.length === 0) return;
    if (c === 0) return this.copy(x, out);
    gemma.softcap(this.#gpu, this.#bind(x), this.#bind(out, x.length), x.length, c);
  }

  sumHeads(
    x: DeviceArray,
    out: DeviceArray,
    rows: number,
    heads: number,
    d: number,
    bias?: DeviceArray,
  ): void {
    const n = this.#rowsFit(x, rows, heads * d, heads * d, "sumHeads input");
    const no = this.#rowsFit(out, rows, d, d, "sumHeads output");
    if (bias) this.#rowsFit(bias, 1, d, d, "sumHeads bias");
    if (overlaps(this.#array(out), no, this.#array(x), n)) {
      throw new KernelError("sumHeads: the output overlaps the input");
    }
    if (no === 0) return;
    ew.sumHeads(
      this.#gpu,
      this.#bind(x, n),
      this.#bind(out, no),
      rows,
      heads,
      d,
      bias && this.#bind(bias, d),
      this.#dummy,
    );
  }

  #attention(a: AttentionArgs): att.AttentionGeometry {
    const nK = a.qStart + a.nQ, width = a.nHeads * a.dHead;
    const nKv = a.nKeyValueHeads ?? a.nHeads;
    if (!Number.isInteger(nKv) || nKv < 1 || a.nHeads % nKv !== 0) {
      throw new KernelError(
        `attention: ${a.nHeads} heads do not group into ${nKv} key/value heads`,
      );
    }
    const nq = this.#rowsFit(a.q, a.nQ, width, a.stride, "attention q");
    const nk = this.#rowsFit(a.k, nK, nKv * a.dHead, a.stride, "attention k");
    const nv = this.#rowsFit(a.v, nK, nKv * a.dHead, a.stride, "attention v");
    const nz = this.#rowsFit(a.z, a.nQ, width, a.zStride, "attention z");
    return {
      q: this.#bind(a.q, nq),
      k: this.#bind(a.k, nk),
      v: this.#bind(a.v, nv),
      z: this.#bind(a.z, nz),
      stride: a.stride,
      zStride: a.zStride,
      nQ: a.nQ,
      qStart: a.qStart,
      nHeads: a.nHeads,
      dHead: a.dHead,
      scale: a.scale,
      group: a.nHeads / nKv,
      kStart: a.kStart ?? 0,
      window: checkWindow(a.window),
      softcap: checkCap(a.softcap, "attention softcap"),
    };
  }

  #pattern(a: AttentionArgs, p: DeviceArray, what: string): Bound {
    const need = a.nHeads * a.nQ * (a.qStart + a.nQ);
    if (p.length < need) {
      throw new KernelError(`${what} needs ${need} floats, the array has ${p.length}`);
    }
    return this.#bind(p, need);
  }

  attention(a: AttentionArgs, pattern?: DeviceArray): void {
    const g = this.#attention(a);
    if (a.nQ === 0) return;
    const pb = pattern && this.#pattern(a, pattern, "attention pattern");
    if (a.qStart + a.nQ <= att.FUSED_MAX_KEYS) {
      return att.attentionFused(this.#gpu, g, pb, this.#dummy);
    }
    // rows longer than workgroup memory holds: scores, softmax and apply through a buffer
    const need = a.nHeads * a.nQ * (a.qStart + a.nQ);
    const tmp = pb ?? bind(
      this.#gpu,
      new GpuArray(new GpuStore(this.#gpu.temp(need * 4), null), 0, need),
    );
    att.attentionScores(this.#gpu, g, tmp);
    att.softmaxRows(this.#gpu, tmp, tmp, a.nHeads, a.nQ, a.qStart, g.kStart, true, g.window);
    att.attentionApply(this.#gpu, g, tmp, true);
  }

  attentionScores(a: AttentionArgs, scores: DeviceArray): void {
    const g = this.#attention(a);
    if (a.nQ === 0) return;
    att.attentionScores(this.#gpu, g, this.#pattern(a, scores, "scores"));
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
    if (need === 0) return;
    att.softmaxRows(
      this.#gpu,
      this.#bind(scores, need),
      this.#bind(pattern, need),
      nHeads,
      nQ,
      qStart,
      opts.kStart ?? 0,
      opts.causal ?? true,
      checkWindow(opts.window),
    );
  }

  attentionApply(a: AttentionArgs, pattern: DeviceArray, opts: { causal?: boolean } = {}): void {
    const g = this.#attention(a);
    const pb = this.#pattern(a, pattern, "pattern");
    if (a.nQ === 0) return;
    att.attentionApply(this.#gpu, g, pb, opts.causal ?? true);
  }

  /** A temporary storage binding of `n` 32-bit values holding `data` (if given). */
  #temp(n: number, data?: Float32Array | Int32Array): Bound {
    const buf = this.#gpu.temp(n * 4);
    if (data && data.length > 0) this.#gpu.write(buf, 0, data);
    return { b: { buffer: buf, offset: 0, size: buf.size }, base: 0 };
  }

  async #readTemp(t: Bound, n: number): Promise<ArrayBuffer> {
    return await this.#gpu.read(t.b.buffer, 0, n * 4);
  }

  async logSumExpRows(
    x: DeviceArray,
    rows: number,
    n: number,
    ld: number = n,
  ): Promise<Float64Array> {
    const need = this.#rowsFit(x, rows, n, ld, "logSumExpRows");
    if (rows === 0) return new Float64Array(0);
    const out = this.#temp(2 * rows);
    rows_.maxSumExp(this.#gpu, this.#bind(x, need), rows, n, ld, out);
    const ms = new Float32Array(await this.#readTemp(out, 2 * rows));
    return Float64Array.from({ length: rows }, (_, r) => ms[2 * r] + Math.log(ms[2 * r + 1]));
  }

  async takeAlongRows(x: DeviceArray, n: number, index: Int32Array): Promise<Float32Array> {
    const rows = index.length;
    const need = this.#rowsFit(x, rows, n, n, "takeAlongRows");
    for (const j of index) {
      if (!(j >= 0 && j < n)) throw new KernelError(`takeAlongRows: index ${j} outside [0, ${n})`);
    }
    if (rows === 0) return new Float32Array(0);
    const idx = this.#temp(rows, index), out = this.#temp(rows);
    rows_.takeAlongRows(this.#gpu, this.#bind(x, need), n, idx, rows, out);
    return new Float32Array(await this.#readTemp(out, rows));
  }

  async argmaxRows(x: DeviceArray, rows: number, n: number, ld: number = n): Promise<Int32Array> {
    const need = this.#rowsFit(x, rows, n, ld, "argmaxRows");
    if (rows === 0) return new Int32Array(0);
    const out = this.#temp(rows);
    rows_.argmax(this.#gpu, this.#bind(x, need), rows, n, ld, out);
    return new Int32Array(await this.#readTemp(out, rows));
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
    const na = this.#rowsFit(a, m, w.n, lda, "matmulTransposed A");
    const nc = this.#rowsFit(c, m, w.k, ldc, "matmulTransposed C");
    matmul(this.#gpu, {
      a: this.#bind(a, na),
      w,
      c: this.#bind(c, nc),
      m,
      lda,
      ldc,
      accumulate: opts.accumulate ?? false,
      transposed: true,
    }, this.#dummy);
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
    const n = this.#rowsFit(x, rows, d, d, "normBackward input");
    this.#rowsFit(grad, rows, d, d, "normBackward gradient");
    if (dx) this.#rowsFit(dx, rows, d, d, "normBackward dx");
    if (opts.scaleGrad) this.#rowsFit(opts.scaleGrad, rows, 1, 1, "normBackward scale gradient");
    if (opts.scaleGiven && !opts.scaleGrad) {
      throw new KernelError("normBackward: scaleGiven needs the scaleGrad array");
    }
    if (rows === 0) return;
    normBackward(
      this.#gpu,
      this.#bind(x, n),
      this.#bind(grad, n),
      dx ? this.#bind(dx, n) : null,
      rows,
      d,
      eps,
      {
        center: opts.center ?? true,
        scaleGrad: opts.scaleGrad && this.#bind(opts.scaleGrad, rows),
        scaleGiven: opts.scaleGiven ?? false,
        accumulate: opts.accumulate ?? false,
      },
      this.#dummy,
    );
  }

  #attentionGrad(a: AttentionGradArgs): attBack.AttentionGradGeometry {
    const nKv = a.nKeyValueHeads ?? a.nHeads;
    if (!Number.isInteger(nKv) || nKv < 1 || a.nHeads % nKv !== 0) {
      throw new KernelError(`attention backward: ${a.nHeads} heads do not group into ${nKv}`);
    }
    const qw = a.nHeads * a.dHead, kw = nKv * a.dHead;
    const fit = (x: DeviceArray, w: number, s: number, what: string) =>
      this.#bind(x, this.#rowsFit(x, a.T, w, s, `attention backward ${what}`));
    return {
      q: fit(a.q, qw, a.stride, "q"),
      k: fit(a.k, kw, a.stride, "k"),
      v: fit(a.v, kw, a.stride, "v"),
      dz: fit(a.dz, qw, a.dzStride, "dz"),
      dq: fit(a.dq, qw, a.dStride, "dq"),
      dk: fit(a.dk, kw, a.dStride, "dk"),
      dv: fit(a.dv, kw, a.dStride, "dv"),
      stride: a.stride,
      dzStride: a.dzStride,
      dStride: a.dStride,
      T: a.T,
      nHeads: a.nHeads,
      dHead: a.dHead,
      scale: a.scale,
      group: a.nHeads / nKv,
      kStart: a.kStart ?? 0,
      window: checkWindow(a.window),
      softcap: checkCap(a.softcap, "attention softcap"),
    };
  }

  #square(x: DeviceArray, nHeads: number, T: number, what: string): Bound {
    if (x.length < nHeads * T * T) {
      throw new KernelError(`${what} needs ${nHeads * T * T} floats, the array has ${x.length}`);
    }
    return this.#bind(x, nHeads * T * T);
  }

  attentionGradPattern(
    a: AttentionGradArgs,
    pattern: DeviceArray,
    dPattern: DeviceArray,
    opts: { causal?: boolean; fullRows?: boolean } = {},
  ): void {
    const g = this.#attentionGrad(a);
    const p = this.#square(pattern, a.nHeads, a.T, "attention backward pattern");
    const dp = this.#square(dPattern, a.nHeads, a.T, "attention backward dPattern");
    if (a.T === 0) return;
    attBack.attentionGradPattern(this.#gpu, g, p, dp, opts.causal ?? true, opts.fullRows ?? false);
  }

  softmaxBackwardRows(
    pattern: DeviceArray,
    dPattern: DeviceArray,
    dScores: DeviceArray,
    nHeads: number,
    T: number,
  ): void {
    const p = this.#square(pattern, nHeads, T, "softmaxBackwardRows pattern");
    const dp = this.#square(dPattern, nHeads, T, "softmaxBackwardRows dPattern");
    const ds = this.#square(dScores, nHeads, T, "softmaxBackwardRows dScores");
    if (T === 0) return;
    attBack.softmaxBackwardRows(this.#gpu, p, dp, ds, nHeads, T);
  }

  headRmsNormBackward(
    x: DeviceArray,
    grad: DeviceArray,
    w: DeviceArray,
    l: HeadLayout & { gradStride: number },
    eps: number,
  ): void {
    const width = l.nHeads * l.dHead;
    const n = this.#rowsFit(x, l.rows, width, l.stride, "headRmsNormBackward input");
    const ng = this.#rowsFit(grad, l.rows, width, l.gradStride, "headRmsNormBackward gradient");
    this.#rowsFit(w, 1, width, width, "headRmsNormBackward weight");
    if (n === 0 || width === 0) return;
    gemma.headRmsNormBackward(
      this.#gpu,
      this.#bind(x, n),
      this.#bind(grad, ng),
      this.#bind(w, width),
      l,
      eps,
    );
  }

  softcapBackward(x: DeviceArray, dy: DeviceArray, dx: DeviceArray, cap: number): void {
    if (dy.length !== x.length || dx.length < x.length) {
      throw new KernelError(
        `softcapBackward of ${x.length} and ${dy.length} floats into ${dx.length}`,
      );
    }
    this.#sameOrApart(dx, x, x.length, "softcapBackward: dx and x");
    this.#sameOrApart(dx, dy, x.length, "softcapBackward: dx and dy");
    const c = checkCap(cap, "softcap");
    if (x.length === 0) return;
    if (c === 0) return this.copy(dy, dx);
    gemma.softcapBackward(
      this.#gpu,
      this.#bind(x),
      this.#bind(dy),
      this.#bind(dx, x.length),
      x.length,
      c,
    );
  }

  attentionGradQK(a: AttentionGradArgs, dScores: DeviceArray): void {
    const g = this.#attentionGrad(a);
    const ds = this.#square(dScores, a.nHeads, a.T, "attention backward dScores");
    if (a.T === 0) return;
    attBack.attentionGradQK(this.#gpu, g, ds);
  }

  async crossEntropyGradRows(
    x: DeviceArray,
    rows: number,
    n: number,
    coef: Float32Array,
    target: Int32Array,
    out: DeviceArray,
  ): Promise<Float64Array> {
    const need = this.#rowsFit(x, rows, n, n, "crossEntropyGradRows input");
    this.#rowsFit(out, rows, n, n, "crossEntropyGradRows output");
    if (coef.length !== rows || target.length !== rows) {
      throw new KernelError(
        `crossEntropyGradRows: ${rows} rows need ${rows} coefficients and targets, got ` +
          `${coef.length} and ${target.length}`,
      );
    }
    if (rows === 0) return new Float64Array(0);
    const c = this.#temp(rows, coef), t = this.#temp(rows, target), ms = this.#temp(2 * rows);
    rows_.crossEntropyGrad(
      this.#gpu,
      this.#bind(x, need),
      rows,
      n,
      c,
      t,
      this.#bind(out, need),
      ms,
    );
    const pairs = new Float32Array(await this.#readTemp(ms, 2 * rows));
    return Float64Array.from(
      { length: rows },
      (_, r) => pairs[2 * r] + Math.log(pairs[2 * r + 1]),
    );
  }
}

function checkCount(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0) {
    throw new KernelError(`${what}: ${n} is not a count of floats`);
  }
}

/** A sliding window: absent or 0 (none), else a positive integer. */
function checkWindow(w: number | undefined): number {
  if (w === undefined || w === 0) return 0;
  if (!Number.isSafeInteger(w) || w < 0 || w >= 2 ** 32) {
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

const ACTIVATIONS = new Set(["gelu_new", "gelu", "silu", "relu"]);
function checkActivation(act: string): void {
  if (!ACTIVATIONS.has(act)) {
    throw new KernelError(`unknown activation ${act} (gelu_new, gelu, silu or relu)`);
  }
}

/** Whether n1 floats from a and n2 floats from b share memory. */
function overlaps(a: GpuArray, n1: number, b: GpuArray, n2: number): boolean {
  return a.store === b.store && a.offset < b.offset + n2 && b.offset < a.offset + n1;
}
