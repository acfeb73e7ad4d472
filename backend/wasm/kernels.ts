/**
 * The numerical kernels: a thin TypeScript wrapper over the AssemblyScript module compiled from
 * `assembly/` (`kernels-relaxed.wasm` with relaxed SIMD, `kernels-simd.wasm` without).
 *
 * Everything lives in one shared `WebAssembly.Memory` (up to 4 GiB). Pointers are byte offsets
 * of f32 arrays in that memory, obtained from the bump allocator {@linkcode Kernels.alloc};
 * {@linkcode Kernels.mark} / {@linkcode Kernels.release} give arenas.
 *
 * Calls are synchronous. With `threads > 1` (the default in Deno: one per core) worker threads
 * over the same memory share matmul (by column panels or rows), attention (by heads), layerNorm
 * (by rows) and gelu/add (by ranges); every output element is computed by the same instruction
 * sequence whatever the split, so results are bit-identical for any thread count.
 * {@linkcode Kernels.close} stops the workers (a Deno process also exits without it).
 *
 * @example
 * ```ts
 * import { Kernels } from "./kernels.ts";
 * const kn = await Kernels.load();
 * const a = kn.alloc(2 * 3), b = kn.alloc(kn.packedSize(3, 4)), c = kn.alloc(2 * 4);
 * kn.write(a, new Float32Array([1, 2, 3, 4, 5, 6]));
 * const raw = kn.alloc(3 * 4);
 * kn.write(raw, new Float32Array(12).fill(1));
 * kn.packB(raw, b, 3, 4);
 * kn.matmul(a, b, c, 2, 3, 4); // c = a @ ones(3, 4)
 * console.log(kn.read(c, 8)); // [6, 6, 6, 6, 15, 15, 15, 15]
 * kn.close();
 * ```
 * @module
 */
import { KernelError } from "../../core/errors.ts";
import {
  ACTIVATION_CODES,
  argIndex,
  ARGS_F64,
  CHUNK,
  COUNTER,
  COUNTER_I32,
  type KernelExports,
  MAX_ARGS,
  type OpName,
  opName,
  OPS,
  runOp,
  SLOT_BYTES,
  SPLIT,
} from "./abi.ts";
import { WorkerPool } from "./pool.ts";

/** Options of {@linkcode Kernels.load}. */
export interface LoadOptions {
  /**
   * Use the relaxed-SIMD build. Default: whenever the runtime validates it. `true` on a runtime
   * without relaxed SIMD throws a {@linkcode KernelError}.
   */
  relaxedSimd?: boolean;
  /**
   * Threads to use, counting the calling thread (default `navigator.hardwareConcurrency`).
   * `threads - 1` worker threads are started over the same memory; results are bit-identical
   * for any count. Call {@linkcode Kernels.close} to stop them (in Deno a process also exits
   * without it).
   */
  threads?: number;
}

/**
 * Storage of a packed B matrix: `"f32"` ({@linkcode Kernels.packB}) or `"bf16"`
 * ({@linkcode Kernels.packBBf16}: half the memory, values rounded to bfloat16, computed in f32).
 */
export type BDtype = "f32" | "bf16";

/** Options of {@linkcode Kernels.matmul}. */
export interface MatmulOptions {
  /**
   * How B was packed (default `"f32"`). With `"bf16"` each bf16 value is widened to f32 in
   * registers and the arithmetic is the f32 kernel's, so the result equals, bit for bit, the f32
   * matmul over B rounded to bf16.
   */
  bDtype?: BDtype;
  /** Row stride of A in floats (default k). */
  lda?: number;
  /** Row stride of C in floats (default n). */
  ldc?: number;
  /** Pointer to n floats added to every row. */
  bias?: number;
  /** Add the product to the existing C instead of overwriting it. */
  accumulate?: boolean;
  /** First row of C to compute (default 0). */
  rowStart?: number;
  /** One past the last row of C to compute (default m). */
  rowEnd?: number;
}

/** Options of {@linkcode Kernels.layerNorm}. */
export interface LayerNormOptions {
  /** Pointer to d floats: multiplies the normalised values. */
  gamma?: number;
  /** Pointer to d floats: added after gamma. */
  beta?: number;
  /** Pointer to `rows` floats receiving sqrt(var + eps) per row (TransformerLens hook_scale). */
  scale?: number;
  /** First row to normalise (default 0). */
  rowStart?: number;
  /** One past the last row to normalise (default rows). */
  rowEnd?: number;
}

/** An activation function of {@linkcode Kernels.activation} (TransformerLens's names). */
export type ActivationName = keyof typeof ACTIVATION_CODES;

function activationCode(act: ActivationName): number {
  const code = ACTIVATION_CODES[act];
  if (code === undefined) {
    throw new KernelError(
      `unknown activation ${JSON.stringify(act)}: expected ${Object.keys(ACTIVATION_CODES)}`,
    );
  }
  return code;
}

/** Queries and keys of one sequence's causal attention (see {@linkcode Kernels.attention}). */
export interface AttentionScoresArgs {
  /** Query row i at q + i*stride floats. */
  q: number;
  /** Key row j at k + j*stride floats. */
  k: number;
  /** Row stride of q, k, v in floats. */
  stride: number;
  /** Number of queries. */
  nQ: number;
  /** Absolute position of query 0; keys run 0..qStart+nQ-1. */
  qStart: number;
  /** Heads in each row (columns h*dHead..(h+1)*dHead belong to head h). */
  nHeads: number;
  /** Width of one head. */
  dHead: number;
  /** Scores are (q.k)*scale (GPT-2: 1/sqrt(dHead)). */
  scale: number;
  /** First head to compute (default 0). */
  headStart?: number;
  /** One past the last head to compute (default nHeads). */
  headEnd?: number;
  /**
   * Query heads per key/value head (grouped-query attention; default 1): head h reads the key
   * and value columns of head floor(h / group), counted from `k` and `v`.
   */
  group?: number;
  /**
   * Keys before this position are masked (left padding; default 0). A query before it sees no
   * key: its pattern row and z are zero.
   */
  kStart?: number;
  /** Sliding window (0 or absent: none): query i sees keys above qStart + i - window. */
  window?: number;
  /** Softcap of the scores (0 or absent: none): cap tanh(s / cap) before the mask. */
  softcap?: number;
}

/** Arguments of {@linkcode Kernels.attention}. */
export interface AttentionArgs extends AttentionScoresArgs {
  /** Value row j at v + j*stride floats. */
  v: number;
  /** Output row i at z + i*zStride floats (head h in columns [h*dHead, (h+1)*dHead)). */
  z: number;
  /** Row stride of z in floats. */
  zStride: number;
  /** When given (non-zero), receives the softmax pattern [nHeads, nQ, nK], masked entries 0. */
  pattern?: number;
}

/** Arguments of {@linkcode Kernels.attentionApply}. */
export interface AttentionApplyArgs {
  /** [nHeads, nQ, nK] pattern (see `causal` for which entries are read). */
  pattern: number;
  /** Value row j at v + j*stride floats. */
  v: number;
  /** Row stride of v in floats. */
  stride: number;
  /** Output row i at z + i*zStride floats. */
  z: number;
  /** Row stride of z in floats. */
  zStride: number;
  /** Number of queries. */
  nQ: number;
  /** Absolute position of query 0. */
  qStart: number;
  /** Heads in each row. */
  nHeads: number;
  /** Width of one head. */
  dHead: number;
  /** First head to compute (default 0). */
  headStart?: number;
  /** One past the last head to compute (default nHeads). */
  headEnd?: number;
  /** As in {@linkcode AttentionScoresArgs}. */
  group?: number;
  /** As in {@linkcode AttentionScoresArgs} (read only when causal). */
  kStart?: number;
  /** As in {@linkcode AttentionScoresArgs} (read only when causal). */
  window?: number;
  /**
   * Read only the causal keys [kStart, qStart + i] of each row (default true); false reads every
   * key, so a pattern edited above the diagonal is used as is.
   */
  causal?: boolean;
}

const PAGE = 65536;
const MAX_PAGES = 65536;
const MAX_BYTES = PAGE * MAX_PAGES; // 4 GiB
const ALIGN = 64;
/** Attention rows of up to this many keys use the per-thread scratch (longer ones allocate). */
const SCRATCH_ROW_FLOATS = 16384;
/** Columns per packed-B panel (assembly/matmul.ts NR). */
const NR = 8;
/** Below this many multiply-adds a matmul runs on one thread (dispatch costs ~10-50 us). */
const PAR_MATMUL_MIN = 1 << 20;
/** Below this many elements elementwise kernels and layerNorm run on one thread. */
const PAR_ELEMENTS_MIN = 1 << 16;
/** Below this many multiply-adds (q.k and p.v) attention runs on one thread. */
const PAR_ATTENTION_MIN = 1 << 17;
/** Attention ops are shared by heads: threads take one head at a time. */
const BY_HEAD = { split: "headStart", chunk: 1 };

const WASM_FILES = {
  relaxed: new URL("./kernels-relaxed.wasm", import.meta.url),
  simd: new URL("./kernels-simd.wasm", import.meta.url),
};

const moduleCache = new Map<string, Promise<WebAssembly.Module>>();
let warnedSingleThread = false;
let relaxedSupport: Promise<boolean> | undefined;

async function fetchBytes(url: URL): Promise<ArrayBuffer> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new KernelError(`could not fetch the kernel module ${url}: ${e}`, { cause: e });
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new KernelError(`could not fetch the kernel module ${url}: HTTP ${res.status}`);
  }
  return await res.arrayBuffer();
}

/** Compiles (once per process) the kernel module of one build. */
export function compileKernelModule(relaxed: boolean): Promise<WebAssembly.Module> {
  const url = relaxed ? WASM_FILES.relaxed : WASM_FILES.simd;
  let p = moduleCache.get(url.href);
  if (!p) {
    p = (async () => {
      const bytes = await fetchBytes(url);
      try {
        return await WebAssembly.compile(bytes);
      } catch (e) {
        throw new KernelError(`could not compile the kernel module ${url}: ${e}`, { cause: e });
      }
    })();
    p.catch(() => moduleCache.delete(url.href));
    moduleCache.set(url.href, p);
  }
  return p;
}

/** Whether this runtime accepts the relaxed-SIMD build (checked once per process). */
export function relaxedSimdSupported(): Promise<boolean> {
  if (!relaxedSupport) {
    relaxedSupport = fetchBytes(WASM_FILES.relaxed).then((b) => WebAssembly.validate(b));
    relaxedSupport.catch(() => relaxedSupport = undefined);
  }
  return relaxedSupport;
}

function checkInt(name: string, v: number, min = 0): void {
  if (!Number.isInteger(v) || v < min) {
    throw new KernelError(`${name} must be an integer >= ${min}, got ${v}`);
  }
}

function align(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

/** Start of part `i` of `parts` when splitting [start, end), aligned down to `align`. */
function cut(start: number, end: number, parts: number, i: number, align = 1): number {
  if (i >= parts) return end;
  const x = start + Math.floor(((end - start) * i) / parts);
  return i === 0 ? start : Math.max(start, x - ((x - start) % align));
}

/** The kernels over one shared WebAssembly memory. Create with {@linkcode Kernels.load}. */
export class Kernels {
  /** The shared memory every pointer refers to. */
  readonly memory: WebAssembly.Memory;
  /** Whether the relaxed-SIMD build is in use. */
  readonly relaxedSimd: boolean;
  /**
   * The module's raw exports (byte offsets; prefer the methods).
   * @internal
   */
  readonly exports: KernelExports;
  #top: number;
  readonly #heapStart: number;
  /** Per-thread scratch areas (thread t at #scratch + t * #scratchStride): [matmul][attention row]. */
  readonly #scratch: number;
  readonly #scratchStride: number;
  readonly #rowScratchOffset: number;
  readonly #control: number;
  #pool: WorkerPool | undefined;
  /** Arguments of the calling thread's share (slot 0 of the control block). */
  readonly #args0: Float64Array;
  /** Int32 view over the initial memory (holds the control block). */
  readonly #mem: Int32Array;

  private constructor(
    memory: WebAssembly.Memory,
    exports: KernelExports,
    relaxedSimd: boolean,
    threads: number,
  ) {
    this.memory = memory;
    this.exports = exports;
    this.relaxedSimd = relaxedSimd;
    const base = align(Math.max(exports.heapBase() >>> 0, ALIGN));
    this.#control = base;
    this.#scratch = align(base + SLOT_BYTES * (threads + 1));
    this.#rowScratchOffset = align(exports.matmulScratchBytes());
    this.#scratchStride = align(this.#rowScratchOffset + SCRATCH_ROW_FLOATS * 4);
    this.#heapStart = this.#scratch + threads * this.#scratchStride;
    this.#args0 = new Float64Array(memory.buffer, base + ARGS_F64 * 8, MAX_ARGS);
    this.#mem = new Int32Array(memory.buffer);
    this.#top = this.#heapStart;
    this.#ensure(this.#top);
  }

  /**
   * Loads (compiling once per process) the kernel module, creates a fresh shared memory and
   * starts `threads - 1` worker threads over it.
   */
  static async load(opts: LoadOptions = {}): Promise<Kernels> {
    const supported = await relaxedSimdSupported();
    if (opts.relaxedSimd === true && !supported) {
      throw new KernelError(
        "relaxedSimd: true was requested but this runtime does not support relaxed SIMD; " +
          "load without the option to use the plain SIMD build",
      );
    }
    // A browser page may share memory with workers only when cross-origin isolated
    // (COOP/COEP headers); elsewhere the default is one thread per core.
    const g = globalThis as { Deno?: unknown; crossOriginIsolated?: boolean };
    const canShare = g.Deno !== undefined || g.crossOriginIsolated !== false;
    const cores = Math.max(1, globalThis.navigator?.hardwareConcurrency ?? 1);
    const threads = opts.threads ?? (canShare ? cores : 1);
    if (!Number.isInteger(threads) || threads < 1 || threads > 256) {
      throw new KernelError(`threads must be an integer in [1, 256], got ${opts.threads}`);
    }
    if (threads > 1 && !canShare) {
      throw new KernelError(
        `threads: ${threads} needs a cross-origin isolated page (serve it with the headers ` +
          `Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp), ` +
          `so that worker threads can share WebAssembly memory; or use threads: 1`,
      );
    }
    const relaxed = opts.relaxedSimd ?? supported;
    const module = await compileKernelModule(relaxed);
    let memory: WebAssembly.Memory;
    try {
      memory = new WebAssembly.Memory({ initial: 256, maximum: MAX_PAGES, shared: true });
    } catch (e) {
      throw new KernelError(`could not create the shared WebAssembly memory: ${e}`, { cause: e });
    }
    const instance = await WebAssembly.instantiate(module, {
      env: {
        memory,
        abort: () => {
          throw new KernelError("kernel aborted");
        },
      },
    });
    const kn = new Kernels(memory, instance.exports as unknown as KernelExports, relaxed, threads);
    if (threads > 1) {
      try {
        kn.#pool = await WorkerPool.start(module, memory, kn.#control, threads - 1);
      } catch (e) {
        // Asked for explicitly: say so. By default: run on the calling thread alone (for example
        // where the runtime offers no workers), and say that once per process.
        if (opts.threads !== undefined) throw e;
        if (!warnedSingleThread) {
          warnedSingleThread = true;
          console.error(
            `transformer-lens: kernel worker threads could not start, computing on 1 thread ` +
              `(${(e as Error).message.split("\n")[0]})`,
          );
        }
      }
    }
    return kn;
  }

  /** Threads in use, counting the calling thread (1 after {@linkcode Kernels.close}). */
  get threads(): number {
    return this.#pool ? this.#pool.size + 1 : 1;
  }

  /** Stops the worker threads; the kernels keep working on the calling thread alone. */
  close(): void {
    this.#pool?.close();
    this.#pool = undefined;
  }

  #scratchOf(t: number): number {
    return this.#scratch + t * this.#scratchStride;
  }

  /** Zeroes the dynamic-scheduling counter (in slot 0's header) and returns its byte offset. */
  #resetCounter(): number {
    Atomics.store(this.#mem, this.#control / 4 + COUNTER_I32, 0);
    return this.#control + COUNTER_I32 * 4;
  }

  /** Argument array of thread t (0 = the calling thread). */
  #argsOf(t: number): Float64Array {
    return t === 0 || !this.#pool ? this.#args0 : this.#pool.args(t);
  }

  /**
   * Runs `op` on threads 0..T-1: thread t gets the arguments `args(t)`, by name (each of
   * `OPS[op].args` exactly once, written into the slot in the export's order). With `sched`,
   * threads instead share the `[start, end)` range of the argument pair starting at `sched.split`
   * in chunks of `sched.chunk`, taken from a counter.
   */
  #launch(
    op: OpName,
    T: number,
    args: (t: number) => Record<string, number>,
    sched?: { split: string; chunk: number },
  ): void {
    const names: readonly string[] = OPS[op].args;
    const counter = T > 1 && sched ? this.#resetCounter() : 0;
    for (let t = 0; t < T; t++) {
      const x = this.#argsOf(t);
      const values = args(t);
      if (Object.keys(values).length !== names.length) {
        throw new KernelError(
          `kernel ${op} takes ${names.join(", ")}; got ${Object.keys(values).join(", ")}`,
        );
      }
      names.forEach((name, i) => {
        const v = values[name];
        if (typeof v !== "number" || Number.isNaN(v)) {
          throw new KernelError(`kernel ${op}: argument ${name} is ${v}, not a number`);
        }
        x[i] = v;
      });
      x[COUNTER] = counter;
      if (counter) {
        x[CHUNK] = sched!.chunk;
        x[SPLIT] = argIndex(op, sched!.split);
      }
    }
    const code = OPS[op].code;
    try {
      if (T > 1 && this.#pool) this.#pool.run(code, T - 1, this.exports);
      else runOp(this.exports, code, this.#args0, this.#mem);
    } catch (e) {
      if (e instanceof WebAssembly.RuntimeError) {
        throw new KernelError(
          `kernel ${opName(code)} failed: ${e.message} (a pointer or size passed to it is wrong)`,
          { cause: e },
        );
      }
      throw e;
    }
  }

  /** Bytes currently allocated (above the module's own reserved area). */
  get bytesInUse(): number {
    return this.#top - this.#heapStart;
  }

  #ensure(endByte: number): void {
    const have = this.memory.buffer.byteLength;
    if (endByte <= have) return;
    const pages = Math.ceil((endByte - have) / PAGE);
    try {
      this.memory.grow(pages);
    } catch (e) {
      throw new KernelError(
        `could not grow WebAssembly memory by ${mib(pages * PAGE)} to ${
          mib(have + pages * PAGE)
        } ` +
          `(${mib(this.bytesInUse)} in use): ${e}`,
        { cause: e },
      );
    }
  }

  /**
   * Allocates nFloats floats (uninitialised; 64-byte aligned) and returns the byte offset.
   * Grows the memory as needed; throws {@linkcode KernelError} past 4 GiB.
   */
  alloc(nFloats: number): number {
    checkInt("alloc size", nFloats);
    const ptr = this.#top;
    const end = ptr + align(nFloats * 4);
    if (end > MAX_BYTES) {
      throw new KernelError(
        `out of WebAssembly memory: asked for ${nFloats} floats (${mib(nFloats * 4)}) with ` +
          `${mib(this.bytesInUse)} already in use; the limit is 4 GiB (wasm32). Release ` +
          `activations you no longer need (mark/release) or use smaller batches`,
      );
    }
    this.#ensure(end);
    this.#top = end;
    return ptr;
  }

  /** The current allocation mark; {@linkcode Kernels.release} frees everything allocated after. */
  mark(): number {
    return this.#top;
  }

  /** Frees every allocation made after `mark` was taken. */
  release(mark: number): void {
    if (!Number.isInteger(mark) || mark < this.#heapStart || mark > this.#top) {
      throw new KernelError(
        `release: ${mark} is not a live mark (heap is ${this.#heapStart}..${this.#top})`,
      );
    }
    this.#top = mark;
  }

  /** A fresh Float32Array view of memory (invalid after the memory grows: do not keep it). */
  view(ptr: number, nFloats: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, nFloats);
  }

  /** Copies data into memory at ptr. */
  write(ptr: number, data: Float32Array): void {
    this.view(ptr, data.length).set(data);
  }

  /** Copies nFloats floats out of memory (an owned array). */
  read(ptr: number, nFloats: number): Float32Array<ArrayBuffer> {
    // Built from the view: the runtime copies into memory it need not zero first.
    return new Float32Array(this.view(ptr, nFloats));
  }

  /** Copies nFloats floats out of memory into `out` from index `offset`. */
  readInto(ptr: number, nFloats: number, out: Float32Array, offset: number): void {
    out.set(this.view(ptr, nFloats), offset);
  }

  /** Copies nFloats floats from src to dst inside memory (the ranges may overlap). */
  copy(src: number, dst: number, nFloats: number): void {
    new Uint8Array(this.memory.buffer).copyWithin(dst, src, src + nFloats * 4);
  }

  /** Copies a rows x cols block whose rows are `stride` floats apart. */
  readStrided(ptr: number, rows: number, cols: number, stride: number): Float32Array<ArrayBuffer> {
    if (rows === 0 || cols === 0) return new Float32Array(0);
    const v = this.view(ptr, (rows - 1) * stride + cols);
    // Dense rows (most hook points: the cache reads every one) are one copy, not a view per row,
    // into an array built from the view, which the runtime need not zero first (caching every
    // activation of a 1 x 101 GPT-2-small run copies 82 MB: 4-5 ms less CPU than zeroing, then
    // copying).
    if (stride === cols || rows === 1) return new Float32Array(v);
    const out = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) out.set(v.subarray(r * stride, r * stride + cols), r * cols);
    return out;
  }

  /** Writes a rows x cols block (data row-major, dense) to rows `stride` floats apart. */
  writeStrided(ptr: number, data: Float32Array, rows: number, cols: number, stride: number): void {
    if (data.length !== rows * cols) {
      throw new KernelError(
        `writeStrided: data has ${data.length} floats, expected ${rows}x${cols}`,
      );
    }
    if (rows === 0 || cols === 0) return;
    const v = this.view(ptr, (rows - 1) * stride + cols);
    if (stride === cols || rows === 1) v.set(data);
    else for (let r = 0; r < rows; r++) v.set(data.subarray(r * cols, (r + 1) * cols), r * stride);
  }

  /** Floats needed to hold a packed [k, n] B matrix. */
  packedSize(k: number, n: number): number {
    return Math.ceil(n / NR) * NR * k;
  }

  /** Packs B [k, n] (row-major at src) into the matmul panel layout at dst (packedSize floats). */
  packB(src: number, dst: number, k: number, n: number): void {
    this.exports.packB(src, dst, k, n);
  }

  /** Inverse of {@linkcode Kernels.packB}: writes B [k, n] row-major at dst. */
  unpackB(src: number, dst: number, k: number, n: number): void {
    this.exports.unpackB(src, dst, k, n);
  }

  /**
   * Floats (4-byte slots, as {@linkcode Kernels.alloc} counts) needed to hold a bf16-packed
   * [k, n] B matrix: half of {@linkcode Kernels.packedSize}.
   */
  packedSizeBf16(k: number, n: number): number {
    return this.packedSize(k, n) / 2;
  }

  /**
   * Packs f32 B [k, n] (row-major at src) into bf16 panels at dst (packedSizeBf16 floats): the
   * panel order of {@linkcode Kernels.packB}, each value rounded to nearest-even bfloat16 (8
   * significant bits: relative error at most 2^-9, about 0.2%). Read by
   * `matmul(..., { bDtype: "bf16" })`.
   */
  packBBf16(src: number, dst: number, k: number, n: number): void {
    this.exports.packBBf16(src, dst, k, n);
  }

  /** Inverse of {@linkcode Kernels.packBBf16}: writes the bf16 values as f32 B [k, n] at dst. */
  unpackBBf16(src: number, dst: number, k: number, n: number): void {
    this.exports.unpackBBf16(src, dst, k, n);
  }

  /** Allocates and fills a packed copy of the row-major [k, n] matrix `data`. */
  uploadPacked(
    data: Float32Array,
    k: number,
    n: number,
    dtype: BDtype = "f32",
  ): number {
    if (data.length !== k * n) {
      throw new KernelError(`uploadPacked: data has ${data.length} floats, expected ${k}x${n}`);
    }
    const bf16 = dtype === "bf16";
    const packed = this.alloc(bf16 ? this.packedSizeBf16(k, n) : this.packedSize(k, n));
    const m = this.mark();
    const raw = this.alloc(k * n);
    this.write(raw, data);
    if (bf16) this.packBBf16(raw, packed, k, n);
    else this.packB(raw, packed, k, n);
    this.release(m);
    return packed;
  }

  /** Reads back a packed [k, n] matrix (packed as `dtype`) as row-major floats. */
  downloadPacked(
    packed: number,
    k: number,
    n: number,
    dtype: BDtype = "f32",
  ): Float32Array<ArrayBuffer> {
    const m = this.mark();
    const raw = this.alloc(k * n);
    if (dtype === "bf16") this.unpackBBf16(packed, raw, k, n);
    else this.unpackB(packed, raw, k, n);
    const out = this.read(raw, k * n);
    this.release(m);
    return out;
  }

  /**
   * C[m, n] = A[m, k] @ B[k, n] (+ bias) (+ C when accumulate), B packed by
   * {@linkcode Kernels.packB} (or {@linkcode Kernels.packBBf16} with `bDtype: "bf16"`). Per
   * element: acc = (C or 0) + bias, then a*b added in k order.
   */
  matmul(
    a: number,
    packedB: number,
    c: number,
    m: number,
    k: number,
    n: number,
    opts: MatmulOptions = {},
  ): void {
    const p = this.#product("matmul", m, k, n, opts);
    this.#launchProduct(p.bf16 ? "matmulBf16" : "matmul", p, {
      a,
      packedB,
      c,
      m,
      k,
      n,
      lda: p.lda,
      ldc: p.ldc,
      bias: opts.bias ?? 0,
      accumulate: opts.accumulate ? 1 : 0,
    });
  }

  /**
   * A product's checked options: C [m, cols] from A [m, inner] (rows `lda`, `ldc` floats apart),
   * the row range, and whether B is bf16.
   */
  #product(
    what: string,
    m: number,
    inner: number,
    cols: number,
    opts: Omit<MatmulOptions, "bias">,
  ) {
    const lda = opts.lda ?? inner, ldc = opts.ldc ?? cols;
    const rowStart = opts.rowStart ?? 0, rowEnd = opts.rowEnd ?? m;
    if (rowStart < 0 || rowEnd > m || rowStart > rowEnd) {
      throw new KernelError(`${what}: row range [${rowStart}, ${rowEnd}) is not inside [0, ${m})`);
    }
    if (lda < inner || ldc < cols) {
      throw new KernelError(`${what}: lda ${lda} < ${inner} or ldc ${ldc} < ${cols}`);
    }
    if (opts.bDtype !== undefined && opts.bDtype !== "f32" && opts.bDtype !== "bf16") {
      throw new KernelError(`${what}: bDtype must be "f32" or "bf16", got ${opts.bDtype}`);
    }
    return { lda, ldc, rowStart, rowEnd, inner, cols, bf16: opts.bDtype === "bf16" };
  }

  /**
   * Runs a product op over C's rows [rowStart, rowEnd) and every column panel, shared by threads
   * (by panels or by rows, whichever is cheaper: any split gives bit-identical results, see
   * assembly/matmul.ts), in chunks of ~1/8 of each thread's share taken dynamically (runOp).
   */
  #launchProduct(
    op: "matmul" | "matmulBf16" | "matmulBT" | "matmulBTBf16",
    p: { rowStart: number; rowEnd: number; inner: number; cols: number },
    args: Record<string, number>,
  ): void {
    const panels = Math.ceil(p.cols / NR);
    const rows = p.rowEnd - p.rowStart;
    const maxT = this.threads;
    let T = 1, byPanels = true;
    if (maxT > 1 && rows * p.inner * p.cols >= PAR_MATMUL_MIN) {
      if (panels >= 4 * maxT) T = maxT;
      else if (rows >= 8 * maxT) (T = maxT), (byPanels = false);
    }
    const chunk = byPanels
      ? Math.max(8, Math.ceil(panels / (8 * T)))
      : Math.max(16, Math.ceil(rows / (8 * T) / 4) * 4);
    this.#launch(op, T, (t) => ({
      ...args,
      rowStart: p.rowStart,
      rowEnd: p.rowEnd,
      panelStart: 0,
      panelEnd: panels,
      scratch: this.#scratchOf(t),
    }), { split: byPanels ? "panelStart" : "rowStart", chunk });
  }

  /**
   * out = (x - mean) / sqrt(var + eps) (* gamma + beta), per row of d floats. Mean and
   * variance in f64. `scale[r]` receives sqrt(var + eps) when given. x and out may alias.
   */
  layerNorm(
    x: number,
    out: number,
    rows: number,
    d: number,
    eps: number,
    opts: LayerNormOptions = {},
  ): void {
    const gamma = opts.gamma ?? 0, beta = opts.beta ?? 0, scale = opts.scale ?? 0;
    const r0 = opts.rowStart ?? 0, r1 = opts.rowEnd ?? rows;
    const maxT = this.threads;
    const T = (r1 - r0) * d >= PAR_ELEMENTS_MIN && r1 - r0 >= 2 * maxT ? maxT : 1;
    this.#launch("layerNorm", T, (t) => ({
      x,
      out,
      rows,
      d,
      eps,
      gamma,
      beta,
      scale,
      rowStart: cut(r0, r1, T, t),
      rowEnd: cut(r0, r1, T, t + 1),
    }));
  }

  /** Threads for an elementwise op over n floats, and thread t's range (multiples of 4). */
  #ranges(n: number): [number, (t: number) => { start: number; end: number }] {
    const T = n >= PAR_ELEMENTS_MIN ? this.threads : 1;
    return [T, (t) => ({ start: cut(0, n, T, t, 4), end: cut(0, n, T, t + 1, 4) })];
  }

  /** out = gelu_new(x) over n floats (x and out may alias). */
  geluNew(x: number, out: number, n: number): void {
    const [T, range] = this.#ranges(n);
    this.#launch("geluNew", T, (t) => ({ x, out, ...range(t) }));
  }

  /** out = a + b over n floats (any may alias). */
  add(a: number, b: number, out: number, n: number): void {
    const [T, range] = this.#ranges(n);
    this.#launch("add", T, (t) => ({ a, b, out, ...range(t) }));
  }

  /** Copies `rows` rows of `cols` floats, `stride` floats apart at src, to dense rows at dst. */
  copyRows(src: number, dst: number, rows: number, cols: number, stride: number): void {
    const [T, range] = this.#rowRanges(rows, cols);
    this.#launch("copyRows", T, (t) => ({ src, dst, cols, stride, ...range(t) }));
  }

  /** Threads for a row-wise op over `rows` rows of `perRow` elements, and thread t's rows. */
  #rowRanges(
    rows: number,
    perRow: number,
  ): [number, (t: number) => { rowStart: number; rowEnd: number }] {
    const maxT = this.threads;
    const T = rows * perRow >= PAR_ELEMENTS_MIN && rows >= 2 * maxT ? maxT : 1;
    return [T, (t) => ({ rowStart: cut(0, rows, T, t), rowEnd: cut(0, rows, T, t + 1) })];
  }

  /**
   * RMSNorm without its weight: out = x / sqrt(mean(x^2) + eps) per row of d floats (sum of
   * squares in f64, one rounding). `scale` receives sqrt(mean(x^2) + eps) per row when given.
   * x and out may alias.
   */
  rmsNorm(x: number, out: number, rows: number, d: number, eps: number, scale = 0): void {
    const [T, range] = this.#rowRanges(rows, d);
    this.#launch("rmsNorm", T, (t) => ({ x, out, rows, d, eps, scale, ...range(t) }));
  }

  /** out = x * w (+ b) per row of d floats (w, b: pointers to d floats; b 0 for none). */
  affineRows(x: number, out: number, rows: number, d: number, w: number, b = 0): void {
    const [T, range] = this.#rowRanges(rows, d);
    this.#launch("affineRows", T, (t) => ({ x, out, d, w, b, ...range(t) }));
  }

  /**
   * out = act(x) over n floats (x and out may alias), computed in f64 and rounded once: exact
   * GELU (erf), SiLU, ReLU, or gelu_new (the same values as {@linkcode Kernels.geluNew}).
   */
  activation(act: ActivationName, x: number, out: number, n: number): void {
    const code = activationCode(act);
    const [T, range] = this.#ranges(n);
    this.#launch("activation", T, (t) => ({ x, out, act: code, ...range(t) }));
  }

  /**
   * Gated MLP activation: row r of `gateUp` is [gate (dMlp floats) | up (dMlp floats)];
   * out[r, j] = act(gate[r, j]) * up[r, j], in f64 and rounded once.
   */
  gatedActivation(act: ActivationName, gateUp: number, out: number, rows: number, dMlp: number) {
    const code = activationCode(act);
    const [T, range] = this.#rowRanges(rows, dMlp);
    this.#launch("gatedActivation", T, (t) => ({ gateUp, out, dMlp, act: code, ...range(t) }));
  }

  /**
   * SAELens's JumpReLU over rows of n floats: out = x where x > threshold[j] and x > 0, else 0
   * (`threshold`: a pointer to n floats). x and out may alias.
   */
  jumpRelu(x: number, threshold: number, out: number, rows: number, n: number): void {
    const [T, range] = this.#rowRanges(rows, n);
    this.#launch("jumpRelu", T, (t) => ({ x, threshold, out, n, ...range(t) }));
  }

  /**
   * A gated SAE's activation: row r of `gateMag` is [gate (n floats) | magnitude (n floats)];
   * out[r, j] = gate > 0 ? max(magnitude, 0) : 0.
   */
  gatedRelu(gateMag: number, out: number, rows: number, n: number): void {
    const [T, range] = this.#rowRanges(rows, n);
    this.#launch("gatedRelu", T, (t) => ({ gateMag, out, n, ...range(t) }));
  }

  /**
   * Top-k along rows of n floats: the k largest of each row, ReLU'd, zeros elsewhere (ties at
   * the k-th value: the first indices; NaN never selected). x and out must not overlap.
   */
  topkRows(x: number, out: number, rows: number, n: number, k: number): void {
    const [T, range] = this.#rowRanges(rows, n);
    this.#launch("topkRows", T, (t) => ({ x, out, n, k, ...range(t) }));
  }

  /**
   * Backward of {@linkcode Kernels.activation}: dx = dy * act'(x) over n floats (dx may alias x
   * or dy), in f64 and rounded once. As PyTorch's autograd: relu gives 0 where x <= 0 (at 0 too,
   * whatever dy is) and dy elsewhere (a NaN x too); the smooth derivatives are NaN at +-Infinity.
   */
  activationBackward(act: ActivationName, x: number, dy: number, dx: number, n: number): void {
    const code = activationCode(act);
    const [T, range] = this.#ranges(n);
    this.#launch("activationBackward", T, (t) => ({ x, dy, dx, act: code, ...range(t) }));
  }

  /**
   * Backward of {@linkcode Kernels.gatedActivation}: from rows of `gateUp` ([gate | up], 2 dMlp
   * floats) and of `dOut` (dMlp floats), rows of `dGateUp` get [dOut * up * act'(gate) |
   * dOut * act(gate)], in f64 and rounded once. dGateUp may alias gateUp, not dOut.
   */
  gatedActivationBackward(
    act: ActivationName,
    gateUp: number,
    dOut: number,
    dGateUp: number,
    rows: number,
    dMlp: number,
  ): void {
    const code = activationCode(act);
    const [T, range] = this.#rowRanges(rows, dMlp);
    this.#launch("gatedActivationBackward", T, (t) => ({
      gateUp,
      dOut,
      dGateUp,
      dMlp,
      act: code,
      ...range(t),
    }));
  }

  /**
   * Rotary embeddings (rotate-half convention) in place on heads [0, nHeads) of `rows` rows of
   * x (`stride` floats apart): in each head, dims i and i + rotaryDim/2 (i < rotaryDim/2) turn
   * by angle i of the row's position. `cs` holds a row of rotaryDim floats per row of x: the
   * rotaryDim/2 cosines, then the sines.
   */
  rotary(
    x: number,
    stride: number,
    rows: number,
    nHeads: number,
    dHead: number,
    rotaryDim: number,
    cs: number,
  ): void {
    if (rotaryDim % 2 !== 0 || rotaryDim > dHead || nHeads * dHead > stride) {
      throw new KernelError(
        `rotary: rotaryDim ${rotaryDim} must be even and at most dHead ${dHead}, and ` +
          `${nHeads} heads must fit a row of ${stride} floats`,
      );
    }
    const [T, range] = this.#rowRanges(rows, nHeads * rotaryDim);
    this.#launch("rotary", T, (t) => ({
      x,
      stride,
      nHeads,
      dHead,
      rotaryDim,
      cs,
      ...range(t),
    }));
  }

  /** Threads to use for attention over heads [hs, he) with this much work. */
  #attnThreads(hs: number, he: number, nQ: number, nK: number, dHead: number): number {
    if (this.threads === 1 || he - hs < 2 || (he - hs) * nQ * nK * dHead < PAR_ATTENTION_MIN) {
      return 1;
    }
    return Math.min(this.threads, he - hs);
  }

  /**
   * Causal self-attention for one sequence (see AttentionArgs): z = softmax(mask((q.k)*scale)) @ v,
   * per head. Writes the pattern [nHeads, nQ, nK] when `pattern` is given. Heads are split
   * across threads.
   */
  attention(a: AttentionArgs): void {
    const hs = a.headStart ?? 0, he = a.headEnd ?? a.nHeads;
    const nK = a.qStart + a.nQ;
    const T = this.#attnThreads(hs, he, a.nQ, nK, a.dHead);
    const mark = this.mark();
    // Each thread needs nK floats of row scratch (used when no pattern is written).
    let rows = this.#scratchOf(0) + this.#rowScratchOffset, rowStride = this.#scratchStride;
    if (nK > SCRATCH_ROW_FLOATS) {
      rowStride = align(nK * 4);
      rows = this.alloc((rowStride / 4) * T);
    }
    try {
      this.#launch("attention", T, (t) => ({
        q: a.q,
        k: a.k,
        v: a.v,
        stride: a.stride,
        z: a.z,
        zStride: a.zStride,
        nQ: a.nQ,
        qStart: a.qStart,
        dHead: a.dHead,
        scale: a.scale,
        pattern: a.pattern ?? 0,
        headStart: hs,
        headEnd: he,
        scratch: rows + t * rowStride,
        group: a.group ?? 1,
        kStart: a.kStart ?? 0,
        window: a.window ?? 0,
        softcap: a.softcap ?? 0,
      }), BY_HEAD);
    } finally {
      this.release(mark);
    }
  }

  /** Scores [nHeads, nQ, nK] = (q.k)*scale, masked entries -Infinity (hook_attn_scores). */
  attentionScores(a: AttentionScoresArgs, scores: number): void {
    const hs = a.headStart ?? 0, he = a.headEnd ?? a.nHeads;
    const T = this.#attnThreads(hs, he, a.nQ, a.qStart + a.nQ, a.dHead);
    this.#launch("attentionScores", T, () => ({
      q: a.q,
      k: a.k,
      stride: a.stride,
      nQ: a.nQ,
      qStart: a.qStart,
      dHead: a.dHead,
      scale: a.scale,
      scores,
      headStart: hs,
      headEnd: he,
      group: a.group ?? 1,
      kStart: a.kStart ?? 0,
      window: a.window ?? 0,
      softcap: a.softcap ?? 0,
    }), BY_HEAD);
  }

  /**
   * Pattern rows [nHeads, nQ, nK] from score rows (may alias). Causal (default): softmax over the
   * keys [kStart, qStart + i], other entries 0. Not causal: softmax over whole rows (what a hook on
   * the scores returned is used as is); rows with no finite score become zeros.
   */
  softmaxRows(
    scores: number,
    pattern: number,
    nHeads: number,
    nQ: number,
    qStart: number,
    opts: { kStart?: number; causal?: boolean; window?: number } = {},
  ): void {
    const T = this.#attnThreads(0, nHeads, nQ, qStart + nQ, 16);
    const causal = opts.causal ?? true ? 1 : 0;
    this.#launch("softmaxRows", T, () => ({
      scores,
      pattern,
      nQ,
      qStart,
      headStart: 0,
      headEnd: nHeads,
      kStart: opts.kStart ?? 0,
      causal,
      window: opts.window ?? 0,
    }), BY_HEAD);
  }

  /** z = pattern @ v per head, over each query's causal keys (default) or every key. */
  attentionApply(a: AttentionApplyArgs): void {
    const hs = a.headStart ?? 0, he = a.headEnd ?? a.nHeads;
    const T = this.#attnThreads(hs, he, a.nQ, a.qStart + a.nQ, a.dHead);
    this.#launch("attentionApply", T, () => ({
      pattern: a.pattern,
      v: a.v,
      stride: a.stride,
      z: a.z,
      zStride: a.zStride,
      nQ: a.nQ,
      qStart: a.qStart,
      dHead: a.dHead,
      headStart: hs,
      headEnd: he,
      group: a.group ?? 1,
      kStart: a.kStart ?? 0,
      causal: a.causal ?? true ? 1 : 0,
      window: a.window ?? 0,
    }), BY_HEAD);
  }

  /**
   * C[m, k] = A[m, n] @ B^T (+ C when accumulate), B packed [k, n] by {@linkcode Kernels.packB}
   * (or {@linkcode Kernels.packBBf16} with `bDtype: "bf16"`): the product a backward pass needs
   * (dX = dY W^T) from the forward's packed weights, without a transposed copy. Equals, bit for
   * bit, {@linkcode Kernels.matmul} over B^T packed (per element: acc = C or 0, then a*b added in
   * n order). `rowStart`/`rowEnd` and the thread split work as in matmul.
   */
  matmulBT(
    a: number,
    packedB: number,
    c: number,
    m: number,
    k: number,
    n: number,
    opts: Omit<MatmulOptions, "bias"> = {},
  ): void {
    const p = this.#product("matmulBT", m, n, k, opts);
    this.#launchProduct(p.bf16 ? "matmulBTBf16" : "matmulBT", p, {
      a,
      packedB,
      c,
      m,
      k,
      n,
      lda: p.lda,
      ldc: p.ldc,
      accumulate: opts.accumulate ? 1 : 0,
    });
  }

  /**
   * The backward pass of LayerNorm (`center`, default) or RMSNorm (`center: false`) over rows of
   * d floats: x is the norm's input, g the gradient at its output (hook_normalized), gamma its
   * weight if any. Writes dL/dscale per row into `dScale` (hook_scale's gradient) when given, or
   * reads it from there with `scaleGiven` (a hook replaced it); writes (or with `accumulate`, adds)
   * dL/dx into `dx` unless `dx` is 0. f64 inside, each output rounded once.
   */
  normBackward(
    x: number,
    g: number,
    dx: number,
    rows: number,
    d: number,
    eps: number,
    opts: {
      gamma?: number;
      center?: boolean;
      dScale?: number;
      scaleGiven?: boolean;
      accumulate?: boolean;
    } = {},
  ): void {
    const maxT = this.threads;
    const T = rows * d >= PAR_ELEMENTS_MIN && rows >= 2 * maxT ? maxT : 1;
    this.#launch("normBackward", T, (t) => ({
      x,
      g,
      gamma: opts.gamma ?? 0,
      dx,
      dScale: opts.dScale ?? 0,
      rows,
      d,
      eps,
      center: opts.center ?? true ? 1 : 0,
      scaleGiven: opts.scaleGiven ? 1 : 0,
      accumulate: opts.accumulate ? 1 : 0,
      rowStart: cut(0, rows, T, t),
      rowEnd: cut(0, rows, T, t + 1),
    }));
  }

  /**
   * Attention backward, step 1, for one sequence of T positions: dPattern [nHeads, T, T] =
   * dz_i . v_j (every key with `fullRows`, as TransformerLens's hook_pattern gradient; else the
   * causal keys, other entries 0) and dv_j = sum_i pattern[i, j] dz_i (over the causal queries, or
   * every query with `causal: false`). dv rows share the stride `dStride` of dq and dk.
   */
  attentionGradPattern(a: {
    dz: number;
    dzStride: number;
    v: number;
    stride: number;
    pattern: number;
    dPattern: number;
    dv: number;
    dStride: number;
    T: number;
    nHeads: number;
    dHead: number;
    group?: number;
    kStart?: number;
    causal?: boolean;
    fullRows?: boolean;
    window?: number;
  }): void {
    const group = a.group ?? 1, nKv = a.nHeads / group;
    const T = this.#attnThreads(0, nKv, a.T, a.T, a.dHead * group);
    this.#launch("attentionGradPattern", T, () => ({
      dz: a.dz,
      dzStride: a.dzStride,
      v: a.v,
      stride: a.stride,
      pattern: a.pattern,
      dPattern: a.dPattern,
      dv: a.dv,
      dStride: a.dStride,
      T: a.T,
      dHead: a.dHead,
      headStart: 0,
      headEnd: nKv,
      group,
      kStart: a.kStart ?? 0,
      causal: a.causal ?? true ? 1 : 0,
      fullRows: a.fullRows ? 1 : 0,
      window: a.window ?? 0,
    }), BY_HEAD);
  }

  /**
   * Attention backward, step 2: dScores = pattern (dPattern - rowsum(pattern dPattern)) over
   * [nHeads, T, T] (dScores may alias dPattern).
   */
  softmaxBackwardRows(
    pattern: number,
    dPattern: number,
    dScores: number,
    nHeads: number,
    T: number,
  ): void {
    const threads = this.#attnThreads(0, nHeads, T, T, 16);
    this.#launch("softmaxBackwardRows", threads, () => ({
      pattern,
      dPattern,
      dScores,
      T,
      headStart: 0,
      headEnd: nHeads,
    }), BY_HEAD);
  }

  /**
   * Attention backward, step 3: dq_i = scale sum_j dScores[i, j] k_j and dk_j = scale sum_i
   * dScores[i, j] q_i over the causal entries (rows of dq and dk `dStride` apart).
   */
  attentionGradQK(a: {
    dScores: number;
    q: number;
    k: number;
    stride: number;
    dq: number;
    dk: number;
    dStride: number;
    T: number;
    nHeads: number;
    dHead: number;
    scale: number;
    group?: number;
    kStart?: number;
    window?: number;
    softcap?: number;
  }): void {
    const group = a.group ?? 1, nKv = a.nHeads / group;
    const T = this.#attnThreads(0, nKv, a.T, a.T, a.dHead * group);
    const softcap = a.softcap ?? 0;
    // With a softcap each thread recomputes score rows into T floats of scratch.
    const mark = this.mark();
    let rows = this.#scratchOf(0) + this.#rowScratchOffset, rowStride = this.#scratchStride;
    if (softcap > 0 && a.T > SCRATCH_ROW_FLOATS) {
      rowStride = align(a.T * 4);
      rows = this.alloc((rowStride / 4) * T);
    }
    try {
      this.#gradQK(a, T, group, nKv, softcap, (t) => rows + t * rowStride);
    } finally {
      this.release(mark);
    }
  }

  #gradQK(
    a: Parameters<Kernels["attentionGradQK"]>[0],
    T: number,
    group: number,
    nKv: number,
    softcap: number,
    scratch: (t: number) => number,
  ): void {
    this.#launch("attentionGradQK", T, (t) => ({
      dScores: a.dScores,
      q: a.q,
      k: a.k,
      stride: a.stride,
      dq: a.dq,
      dk: a.dk,
      dStride: a.dStride,
      T: a.T,
      dHead: a.dHead,
      scale: a.scale,
      headStart: 0,
      headEnd: nKv,
      group,
      kStart: a.kStart ?? 0,
      window: a.window ?? 0,
      softcap,
      scratch: scratch(t),
    }), BY_HEAD);
  }

  /**
   * RMSNorm with a weight over each head of `rows` rows of x (`stride` floats apart; heads
   * [0, nHeads) of dHead floats from column 0), in place: Gemma 3's q_norm / k_norm. `w` holds
   * nHeads * dHead floats; `scale` (0: none) receives each head's sqrt(mean(x^2) + eps).
   */
  headRmsNorm(
    x: number,
    stride: number,
    rows: number,
    nHeads: number,
    dHead: number,
    w: number,
    eps: number,
    scale = 0,
  ): void {
    const [T, range] = this.#rowRanges(rows, nHeads * dHead);
    this.#launch("headRmsNorm", T, (t) => ({
      x,
      stride,
      nHeads,
      dHead,
      w,
      eps,
      scale,
      ...range(t),
    }));
  }

  /**
   * Backward of {@linkcode Kernels.headRmsNorm}: x its input (rows `stride` apart), g the
   * gradient at its output (rows `gStride` apart), overwritten with the gradient at x.
   */
  headRmsNormBackward(
    x: number,
    stride: number,
    g: number,
    gStride: number,
    rows: number,
    nHeads: number,
    dHead: number,
    w: number,
    eps: number,
  ): void {
    const [T, range] = this.#rowRanges(rows, nHeads * dHead);
    this.#launch("headRmsNormBackward", T, (t) => ({
      x,
      stride,
      g,
      gStride,
      nHeads,
      dHead,
      w,
      eps,
      ...range(t),
    }));
  }

  /** out = cap tanh(x / cap) over n floats (may alias), in f64 and rounded once. */
  softcap(x: number, out: number, n: number, cap: number): void {
    const [T, range] = this.#ranges(n);
    this.#launch("softcap", T, (t) => ({ x, out, cap, ...range(t) }));
  }

  /** dx = dy (1 - tanh(x / cap)^2) over n floats, from the uncapped x (dx may alias either). */
  softcapBackward(x: number, dy: number, dx: number, n: number, cap: number): void {
    const [T, range] = this.#ranges(n);
    this.#launch("softcapBackward", T, (t) => ({ x, dy, dx, cap, ...range(t) }));
  }

  /**
   * For each of `rows` rows of n floats (row stride ld): out[r, j] = coef[r] softmax(x[r])[j],
   * minus coef[r] at j = target[r] when target[r] >= 0: the gradient of
   * coef[r] * cross-entropy(x[r], target[r]). Returns each row's log-sum-exp (as
   * {@linkcode Kernels.logSumExpRows}). out (row stride ldOut, default n) may alias x.
   */
  crossEntropyGradRows(
    x: number,
    rows: number,
    n: number,
    coef: Float32Array,
    target: Int32Array,
    out: number,
    ld: number = n,
    ldOut: number = n,
  ): Float64Array<ArrayBuffer> {
    if (coef.length !== rows || target.length !== rows) {
      throw new KernelError(
        `crossEntropyGradRows: ${rows} rows need ${rows} coefficients and targets, got ` +
          `${coef.length} and ${target.length}`,
      );
    }
    const mark = this.mark();
    try {
      const ms = this.alloc(4 * rows), c = this.alloc(rows), t = this.alloc(rows);
      this.write(c, coef);
      new Int32Array(this.memory.buffer, t, rows).set(target);
      this.#rows("rowMaxSumExp", x, rows, n, ld, ms);
      const T = rows * n >= PAR_ELEMENTS_MIN && rows >= this.threads ? this.threads : 1;
      this.#launch("crossEntropyGradRows", T, (i) => ({
        x,
        n,
        ld,
        ms,
        coef: c,
        target: t,
        out,
        ldOut,
        rowStart: cut(0, rows, T, i),
        rowEnd: cut(0, rows, T, i + 1),
      }));
      const pairs = new Float64Array(this.memory.buffer, ms, 2 * rows);
      return Float64Array.from(
        { length: rows },
        (_, r) => pairs[2 * r] + Math.log(pairs[2 * r + 1]),
      );
    } finally {
      this.release(mark);
    }
  }

  #rows(op: OpName, x: number, rows: number, n: number, ld: number, out: number): void {
    const T = rows * n >= PAR_ELEMENTS_MIN && rows >= this.threads ? this.threads : 1;
    this.#launch(op, T, (t) => ({
      x,
      n,
      ld,
      out,
      rowStart: cut(0, rows, T, t),
      rowEnd: cut(0, rows, T, t + 1),
    }));
  }

  /**
   * out[r] = x[r, 0] + ... + x[r, heads - 1] (+ bias) for `rows` rows of `heads` x d floats
   * (heads added in order, then the bias); bias 0 for none. out must not overlap x.
   */
  sumHeads(x: number, out: number, rows: number, heads: number, d: number, bias = 0): void {
    const maxT = this.threads;
    const T = rows * heads * d >= PAR_ELEMENTS_MIN && rows >= 2 * maxT ? maxT : 1;
    this.#launch("sumHeads", T, (t) => ({
      x,
      out,
      heads,
      d,
      bias,
      rowStart: cut(0, rows, T, t),
      rowEnd: cut(0, rows, T, t + 1),
    }));
  }

  /**
   * Index of the largest value in each of `rows` rows of n floats (row r at x + r*ld floats,
   * ld default n): the first one on ties, like `torch.argmax`; NaN never wins.
   */
  argmaxRows(x: number, rows: number, n: number, ld: number = n): Int32Array<ArrayBuffer> {
    const mark = this.mark();
    try {
      const out = this.alloc(rows);
      this.#rows("rowArgmax", x, rows, n, ld, out);
      return new Int32Array(this.read(out, rows).buffer);
    } finally {
      this.release(mark);
    }
  }

  /**
   * log(sum_j exp(x[r, j])) for each of `rows` rows of n floats (row stride ld, default n): the
   * row maximum is subtracted first, exp is computed in f32 (1-2 ulp) and summed in f64, so the
   * result is accurate to about 1e-7 absolute. Log-probabilities are x[r, t] - logSumExp[r].
   */
  logSumExpRows(x: number, rows: number, n: number, ld: number = n): Float64Array<ArrayBuffer> {
    const mark = this.mark();
    try {
      const out = this.alloc(4 * rows);
      this.#rows("rowMaxSumExp", x, rows, n, ld, out);
      const ms = new Float64Array(this.memory.buffer, out, 2 * rows);
      const res = new Float64Array(rows);
      for (let r = 0; r < rows; r++) res[r] = ms[2 * r] + Math.log(ms[2 * r + 1]);
      return res;
    } finally {
      this.release(mark);
    }
  }
}
