/**
 * The WebGPU device under the backend: finding an adapter, requesting its largest limits, typed
 * errors for the three ways a GPU fails (none there, lost, out of memory), and the command queue
 * the kernels enqueue on. Kernels are recorded into one command encoder and submitted in batches;
 * a host read (or a write, which the queue would otherwise run ahead of the recorded work)
 * submits what is pending first, so every read sees every earlier operation.
 * @module
 */
import {
  GpuDeviceLostError,
  GpuOutOfMemoryError,
  GpuUnavailableError,
  KernelError,
} from "../../core/errors.ts";

/** Options of {@linkcode GpuDevice.load} (and of `WebGpuBackend.load`). */
export interface GpuLoadOptions {
  /** Refuse software / fallback adapters (Mesa's llvmpipe, SwiftShader): `"auto"` device choice. */
  requireHardware?: boolean;
  /** Passed to `requestAdapter` (default `"high-performance"`). */
  powerPreference?: GPUPowerPreference;
}

/** One storage binding: a buffer and the byte range of it a kernel reads or writes. */
export interface Binding {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** Dispatches recorded before a submission (a bound on encoder size; any value works). */
const BATCH = 256;
/** Bytes written with writeBuffer after which {@linkcode GpuDevice.write} submits (their staging is freed). */
const WRITE_FLUSH_BYTES = 64 * 2 ** 20;

/** A dispatch's parameters: u32 fields, f32 fields written as their bits (see {@linkcode f32}). */
export type Params = number[];

const f32View = new Float32Array(1), u32View = new Uint32Array(f32View.buffer);
/** The bits of `x` as float32, for a {@linkcode Params} field the shader reads as `f32`. */
export function f32(x: number): number {
  f32View[0] = x;
  return u32View[0];
}

/**
 * A WebGPU device with the adapter's largest buffer limits, a pipeline cache and a recording
 * command encoder.
 */
export class GpuDevice {
  /** Bytes one storage binding may span. */
  readonly maxBinding: number;
  /** Bytes one buffer may hold. */
  readonly maxBuffer: number;
  /** Byte alignment of a binding's offset. */
  readonly align: number;
  /** Workgroups per dispatch dimension. */
  readonly maxGroups: number;
  /** The adapter's description (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)"). */
  readonly description: string;
  /** Whether the adapter is a software / fallback one. */
  readonly fallback: boolean;
  #lost: GPUDeviceLostInfo | null = null;
  #pipelines = new Map<string, GPUComputePipeline>();
  #writes = new Map<string, boolean[]>();
  #encoder: GPUCommandEncoder | null = null;
  #recorded = 0;
  /** Bytes given to writeBuffer since the last submission (see {@linkcode GpuDevice.write}). */
  #unsubmitted = 0;
  #transient: GPUBuffer[] = [];
  #closed = false;
  #checks: Promise<void>[] = [];
  #oom: KernelError | null = null;

  private constructor(readonly device: GPUDevice, adapter: GPUAdapter) {
    const l = device.limits;
    this.maxBinding = l.maxStorageBufferBindingSize;
    this.maxBuffer = l.maxBufferSize;
    this.align = l.minStorageBufferOffsetAlignment;
    this.maxGroups = l.maxComputeWorkgroupsPerDimension;
    const info = adapter.info;
    this.description = info.description || info.device || info.vendor || "unknown adapter";
    this.fallback = isFallback(adapter);
    device.lost.then((info) => {
      if (!this.#closed) this.#lost = info;
    });
    // An error no scope caught (a dispatch or bind group the implementation refuses: the whole
    // submission is then dropped, and reads would return zeros) surfaces at the next host read.
    device.addEventListener("uncapturederror", (event) => {
      const err = (event as GPUUncapturedErrorEvent).error;
      if (this.#oom) return;
      this.#oom = err instanceof GPUOutOfMemoryError
        ? new GpuOutOfMemoryError(
          `the GPU ran out of memory (${err.message}): free models or results, use smaller ` +
            'batches, a bf16 model, or device "wasm"',
        )
        : new KernelError(`the WebGPU implementation refused a command: ${err.message}`);
    });
  }

  /**
   * Requests an adapter and a device with the adapter's largest `maxBufferSize`,
   * `maxStorageBufferBindingSize` and storage buffers per stage.
   * @throws {GpuUnavailableError} no `navigator.gpu`, no adapter, or (with `requireHardware`)
   * only a software adapter.
   */
  static async load(opts: GpuLoadOptions = {}): Promise<GpuDevice> {
    const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
    if (!gpu) {
      throw new GpuUnavailableError(
        'WebGPU is not available here (no navigator.gpu): use device "wasm", or a browser or ' +
          "Deno build with WebGPU",
      );
    }
    const adapter = await gpu.requestAdapter({
      powerPreference: opts.powerPreference ?? "high-performance",
    });
    if (!adapter) {
      throw new GpuUnavailableError(
        'navigator.gpu offered no adapter (no GPU driver, or WebGPU disabled): use device "wasm"',
      );
    }
    if (opts.requireHardware && isFallback(adapter)) {
      throw new GpuUnavailableError(
        `the only WebGPU adapter is a software one (${adapter.info.description}): use device ` +
          `"webgpu" to run on it anyway, or "wasm"`,
      );
    }
    const a = adapter.limits;
    let device: GPUDevice;
    try {
      device = await adapter.requestDevice({
        requiredLimits: {
          maxBufferSize: a.maxBufferSize,
          maxStorageBufferBindingSize: a.maxStorageBufferBindingSize,
          maxStorageBuffersPerShaderStage: a.maxStorageBuffersPerShaderStage,
          maxComputeWorkgroupStorageSize: a.maxComputeWorkgroupStorageSize,
          maxComputeInvocationsPerWorkgroup: a.maxComputeInvocationsPerWorkgroup,
        },
      });
    } catch (e) {
      throw new GpuUnavailableError(
        `the WebGPU adapter (${adapter.info.description}) refused a device: ${e}`,
        { cause: e },
      );
    }
    return new GpuDevice(device, adapter);
  }

  /** Throws the typed error when the device was lost. */
  checkAlive(): void {
    if (this.#lost) {
      throw new GpuDeviceLostError(
        `the WebGPU device was lost (${this.#lost.reason}: ${this.#lost.message}); its buffers ` +
          'are gone: load the model again, or move it with model.to("wasm") (then back to "webgpu")',
      );
    }
    if (this.#closed) throw new KernelError("the WebGPU backend was closed");
  }

  /**
   * A new storage buffer of `bytes` (rounded up to 4). Running out of GPU memory shows only
   * asynchronously (an error scope): it is recorded, and the next host read (or
   * {@linkcode GpuDevice.finish}) throws it as a {@linkcode GpuOutOfMemoryError}.
   * @throws {GpuOutOfMemoryError} the buffer exceeds the adapter's `maxBufferSize`.
   */
  createBuffer(bytes: number): GPUBuffer {
    this.checkAlive();
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    if (size > this.maxBuffer) {
      throw new GpuOutOfMemoryError(
        `a buffer of ${size} bytes exceeds the adapter's maxBufferSize (${this.maxBuffer}): ` +
          "use smaller batches or a smaller model",
      );
    }
    this.device.pushErrorScope("out-of-memory");
    const b = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.#checks.push(
      this.device.popErrorScope().then((err) => {
        if (err && !this.#oom) {
          this.#oom = new GpuOutOfMemoryError(
            `the GPU ran out of memory for a buffer of ${size} bytes (${err.message}): free ` +
              'models or results, use smaller batches, a bf16 model, or device "wasm"',
          );
        }
      }),
    );
    if (this.#checks.length > 1024) this.#checks = [Promise.all(this.#checks).then(() => {})];
    return b;
  }

  /** Throws (once) an out-of-memory error recorded since the last check. */
  async checkMemory(): Promise<void> {
    const checks = this.#checks;
    this.#checks = [];
    await Promise.all(checks);
    const e = this.#oom;
    this.#oom = null;
    if (e) throw e;
    this.checkAlive();
  }

  /** The compute pipeline of `code` (entry point `main`), compiled once. */
  pipeline(code: string): GPUComputePipeline {
    let p = this.#pipelines.get(code);
    if (!p) {
      // a shader the implementation refuses is a bug of ours: surface it at the next read
      this.device.pushErrorScope("validation");
      const module = this.device.createShaderModule({ code });
      p = this.device.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: "main" },
      });
      this.#checks.push(
        this.device.popErrorScope().then((err) => {
          if (err && !this.#oom) {
            this.#oom = new KernelError(`a WebGPU kernel failed to compile: ${err.message}`);
          }
        }),
      );
      this.#pipelines.set(code, p);
    }
    return p;
  }

  #enc(): GPUCommandEncoder {
    this.checkAlive();
    return this.#encoder ??= this.device.createCommandEncoder();
  }

  /**
   * Records one dispatch of `code` over `groups` workgroups (spread over two dimensions when
   * more than maxComputeWorkgroupsPerDimension: shaders index with {@linkcode GROUP_INDEX}).
   * Binding 0 is the uniform parameters, 1.. the storage bindings in order.
   */
  dispatch(code: string, params: Params, bindings: Binding[], groups: number): void {
    if (groups <= 0) return;
    const pipeline = this.pipeline(code);
    const u = this.device.createBuffer({
      size: Math.max(16, Math.ceil(params.length / 4) * 16),
      usage: GPUBufferUsage.UNIFORM,
      mappedAtCreation: true,
    });
    new Uint32Array(u.getMappedRange()).set(params);
    u.unmap();
    this.#transient.push(u);
    bindings = this.#unalias(code, bindings);
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: u } }];
    bindings.forEach((b, i) =>
      entries.push({
        binding: i + 1,
        resource: { buffer: b.buffer, offset: b.offset, size: b.size },
      })
    );
    const group = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const pass = this.#enc().beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    const x = Math.min(groups, this.maxGroups);
    pass.dispatchWorkgroups(x, Math.ceil(groups / x));
    pass.end();
    if (++this.#recorded >= BATCH) this.flush();
  }

  /**
   * The bindings of one dispatch with no two overlapping ranges of one buffer, as WebGPU requires
   * of writable storage bindings (Chromium's Dawn checks it; wgpu does not): a kernel may read
   * several views of one buffer (q, k and v of the fused Q|K|V), and every binding is declared
   * read_write. A binding the kernel only reads that overlaps another is replaced by a copy of
   * its range, taken before the dispatch, which is what the kernel reads anyway (it must not
   * depend on another binding's writes within the dispatch). Two overlapping bindings that are
   * both written are a bug of the kernel's caller: a KernelError.
   */
  #unalias(code: string, bindings: Binding[]): Binding[] {
    const overlaps = (a: Binding, b: Binding) =>
      a.buffer === b.buffer && a.offset < b.offset + b.size && b.offset < a.offset + a.size;
    if (!bindings.some((b, i) => bindings.some((c, j) => j < i && overlaps(b, c)))) {
      return bindings;
    }
    const written = this.#written(code);
    const kept: Binding[] = [];
    for (const [i, b] of bindings.entries()) {
      if (!written[i]) continue;
      if (kept.some((c) => overlaps(b, c))) {
        throw new KernelError(
          "a WebGPU kernel would write two overlapping views of one buffer (binding " +
            `${i + 1}): allocate its outputs apart`,
        );
      }
      kept.push(b);
    }
    return bindings.map((b, i) => {
      if (written[i]) return b;
      if (!kept.some((c) => overlaps(b, c))) {
        kept.push(b);
        return b;
      }
      const t = this.temp(b.size);
      this.#enc().copyBufferToBuffer(b.buffer, b.offset, t, 0, b.size);
      return { buffer: t, offset: 0, size: b.size };
    });
  }

  /** Which storage bindings (1.., in order) a kernel's WGSL assigns to, by their names. */
  #written(code: string): boolean[] {
    let w = this.#writes.get(code);
    if (!w) {
      const names: string[] = [];
      for (const m of code.matchAll(/@binding\((\d+)\)\s*var<storage[^>]*>\s*(\w+)/g)) {
        names[Number(m[1]) - 1] = m[2];
      }
      w = names.map((n) =>
        new RegExp(`\\b${n}\\[[^;{}]*?\\]\\s*[-+*/]?=(?!=)`).test(code) ||
        new RegExp(`atomic\\w*\\(&${n}\\[`).test(code)
      );
      this.#writes.set(code, w);
    }
    return w;
  }

  /** Records a buffer-to-buffer copy (byte offsets and size multiples of 4). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    if (bytes > 0) this.#enc().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /**
   * A storage buffer for the commands recorded next (a copy's bounce, a read's indices),
   * destroyed after the next host read (or {@linkcode GpuDevice.finish}), when the GPU is done
   * with every command submitted before it.
   */
  temp(bytes: number): GPUBuffer {
    const b = this.createBuffer(bytes);
    this.#transient.push(b);
    return b;
  }

  /** Submits every recorded command. */
  flush(): void {
    if (this.#encoder) {
      this.device.queue.submit([this.#encoder.finish()]);
      this.#encoder = null;
      this.#recorded = 0;
      this.#unsubmitted = 0;
    }
  }

  /** Writes `data` at `offset` bytes of `buffer`, after every recorded command. */
  write(buffer: GPUBuffer, offset: number, data: Float32Array | Uint32Array | Int32Array): void {
    this.flush();
    // a view of shared memory (WebAssembly's) is copied: writeBuffer takes plain buffers only
    const plain = (data.buffer instanceof ArrayBuffer ? data : data.slice()) as Float32Array<
      ArrayBuffer
    >;
    this.device.queue.writeBuffer(buffer, offset, plain);
    // writeBuffer copies into a staging buffer that the implementation frees only once a
    // submission carrying the write has run: without a submit, loading a model's weights would
    // hold a second copy of them until the first forward (issue 17). An empty submit every
    // WRITE_FLUSH_BYTES bounds that to one batch.
    this.#unsubmitted += plain.byteLength;
    if (this.#unsubmitted >= WRITE_FLUSH_BYTES) {
      this.device.queue.submit([]);
      this.#unsubmitted = 0;
    }
  }

  /**
   * The bytes [offset, offset + bytes) of `buffer` once every recorded command has run (one
   * submission and a map).
   */
  async read(buffer: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    const size = Math.ceil(bytes / 4) * 4;
    if (size === 0) return new ArrayBuffer(0);
    const staging = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    let done: GPUBuffer[] = [];
    try {
      this.#enc().copyBufferToBuffer(buffer, offset, staging, 0, size);
      this.flush();
      done = this.#transient.splice(0);
      try {
        await staging.mapAsync(GPUMapMode.READ);
      } catch (e) {
        this.checkAlive();
        throw new KernelError(`reading ${bytes} bytes back from the GPU failed: ${e}`, {
          cause: e,
        });
      }
      const out = staging.getMappedRange().slice(0, bytes);
      await this.checkMemory();
      return out;
    } finally {
      staging.destroy();
      for (const b of done) b.destroy();
    }
  }

  /** Waits for every submitted command (errors the device reported surface here). */
  async finish(): Promise<void> {
    this.flush();
    const done = this.#transient.splice(0);
    await this.device.queue.onSubmittedWorkDone();
    for (const b of done) b.destroy();
    await this.checkMemory();
  }

  /** Releases the device (its buffers with it). */
  destroy(): void {
    if (this.#closed) return;
    this.flush();
    this.#closed = true;
    this.device.destroy();
  }
}

function isFallback(adapter: GPUAdapter): boolean {
  // `isFallbackAdapter` moved from the adapter to its info; read either.
  const a = adapter as GPUAdapter & { isFallbackAdapter?: boolean };
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  return Boolean(a.isFallbackAdapter ?? info.isFallbackAdapter);
}

/**
 * WGSL: the linear workgroup index of a dispatch spread over two dimensions by
 * {@linkcode GpuDevice.dispatch} (use with `@builtin(workgroup_id) wg` and
 * `@builtin(num_workgroups) nwg`).
 */
export const GROUP_INDEX = "(wg.x + wg.y * nwg.x)";
