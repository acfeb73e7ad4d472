/**
 * The activations a `runWithCache` keeps in the backend's memory until they are read. Copying
 * every activation of a pass to the host as it is computed costs more than the copy: an 8 x 101
 * GPT-2-small run caches 668 MB, and fresh host memory that size is page-faulted and zeroed by
 * the kernel and later collected: 1.04-1.16x a plain run, measured. Copied within the backend
 * instead (memory it has touched already, no garbage; `Backend.copyRows`), a disposed cache costs
 * about 2% of a run's CPU time, nearly all of it that copy (bench/README.md); each activation then
 * reaches the host when it is first read ({@linkcode deferredTensor}), and one never read is never
 * copied there.
 *
 * Lifetime: the copies sit in one backend scope opened before the pass's own, so they outlive
 * it. They are released when the cache is disposed (`using cache`), or else at the start of the
 * model's next call on the backend (`exclusive.ts`'s `atNextTurn`) or before a permanent upload
 * (`runNextTurnNow`), which first read what is still unread to the host: a cache kept for later
 * stays whole, at most one cache is held on a backend at a time, and no other call's scope ever
 * sits above it.
 * Only an eager backend (WebAssembly) holds caches, since its reads complete as they are made and
 * `cache.get` is synchronous; a WebGPU pass reads its cache back as it runs.
 * @module
 */
import type { Backend, DeviceArray, Scope } from "../backend/backend.ts";
import { HookError, KernelError } from "../core/errors.ts";
import { deferredTensor, type Tensor } from "../core/tensor.ts";
import { atNextTurn, cancelNextTurn } from "./exclusive.ts";

/**
 * The most a cache holds in the backend's memory, in bytes (GPT-2 small at 8 x 101 caches 668
 * MB). WebAssembly memory never shrinks and has 4 GiB in all, so a larger cache is copied to the
 * host as it is computed instead, as one that does not fit at all is.
 */
export const RESIDENT_MAX_BYTES = 1 << 30;

/**
 * One pass's cached activations in the backend's memory (see the module's documentation).
 * `open` before the pass opens its scope; `take` an array for each activation as it is cached.
 *
 * @example
 * ```ts
 * import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
 * import type { Tensor } from "../core/tensor.ts";
 * import { ResidentCache } from "./resident_cache.ts";
 * const backend = await WasmBackend.load({ threads: 1 });
 * const held = ResidentCache.open(backend, 4)!; // before the pass opens its scope
 * let t: Tensor;
 * {
 *   using pass = backend.scope();
 *   const x = pass.upload(new Float32Array([1, 2, 3, 4]));
 *   const kept = held.take(4)!;
 *   backend.copy(x, kept);
 *   t = held.tensor(kept, [2, 2]);
 * } // the pass's arrays are released here, `kept` is not
 * t.data; // Float32Array [1, 2, 3, 4], read now
 * held.discard();
 * ```
 */
export class ResidentCache implements Disposable {
  readonly #backend: Backend;
  readonly #scope: Scope;
  readonly #arena: DeviceArray;
  #used = 0;
  /** The tensors handed out; one already read holds its data as a plain field. */
  readonly #tensors: Tensor[] = [];
  #state: "held" | "spilled" | "discarded" = "held";
  readonly #spill = () => this.spill();

  private constructor(backend: Backend, scope: Scope, arena: DeviceArray) {
    this.#backend = backend;
    this.#scope = scope;
    this.#arena = arena;
    atNextTurn(backend, this.#spill);
  }

  /**
   * Opens the backend memory for `floats` cached values, or returns undefined where the cache is
   * better copied to the host as the pass runs: a backend that cannot read synchronously (not
   * eager: `Backend.readNow`), nothing to hold, more than {@link RESIDENT_MAX_BYTES}, or memory
   * that cannot grow that far.
   */
  static open(backend: Backend, floats: number): ResidentCache | undefined {
    if (!backend.readNow || floats <= 0 || floats * 4 > RESIDENT_MAX_BYTES) return undefined;
    const scope = backend.scope();
    try {
      return new ResidentCache(backend, scope, scope.alloc(floats));
    } catch (e) {
      scope[Symbol.dispose]();
      if (e instanceof KernelError) return undefined;
      throw e;
    }
  }

  /** The next `n` floats of the held memory, or undefined when they do not fit. */
  take(n: number): DeviceArray | undefined {
    if (this.#state !== "held" || this.#used + n > this.#arena.length) return undefined;
    const a = this.#arena.at(this.#used, n);
    this.#used += n;
    return a;
  }

  /** The tensor of `shape` that reads `array` (taken from this cache) when its data is read. */
  tensor(array: DeviceArray, shape: number[]): Tensor {
    const t = deferredTensor(shape, () => this.#read(array));
    this.#tensors.push(t);
    return t;
  }

  /** Reads every unread activation to the host, then releases the backend memory. */
  spill(): void {
    if (this.#state !== "held") return;
    for (const t of this.#tensors) void t.data; // reads those still unread
    this.#state = "spilled";
    this.#close();
  }

  /** Releases the backend memory: activations not read by now can no longer be read. */
  discard(): void {
    if (this.#state === "held") {
      this.#state = "discarded";
      this.#close();
    }
  }

  /** The same as {@link ResidentCache.discard} (`using`). */
  [Symbol.dispose](): void {
    this.discard();
  }

  #close(): void {
    cancelNextTurn(this.#backend, this.#spill);
    this.#scope[Symbol.dispose]();
  }

  #read(array: DeviceArray): Float32Array {
    if (this.#state === "discarded") {
      throw new HookError(
        "this activation was never read before its cache was disposed: read what you need " +
          "before disposing the cache (or do not dispose it)",
      );
    }
    return this.#backend.readNow!(array);
  }
}
