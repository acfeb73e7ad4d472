/**
 * A pool of worker threads that run kernel calls over the same shared WebAssembly memory.
 *
 * Each worker instantiates the same compiled module over the same `WebAssembly.Memory`. The
 * caller and the workers talk through a control block in that memory: one 256-byte slot per
 * worker holding a sequence number, a state, an op code, a status and up to 20 float64
 * arguments (the layout is in `abi.ts`). A call writes each worker's arguments, posts the job, bumps the sequence number and
 * notifies the worker, runs its own share on the calling thread, then for each worker either
 * takes back a job the worker has not claimed yet (and runs it itself) or waits (spin, then
 * `Atomics.wait`) until the worker is done. So kernel calls stay synchronous for the caller, and
 * a worker descheduled by the OS never holds it up for long.
 *
 * In Deno the workers are `node:worker_threads` workers, unref'd, so a process that never calls
 * `close()` still exits (Deno's Web Workers keep the process alive and cannot be unref'd).
 * Elsewhere (browsers) they are module Web Workers.
 * @module
 */
import { KernelError } from "../../core/errors.ts";
import {
  ARGS_F64,
  CANCELLED,
  EXIT,
  type KernelExports,
  MAX_ARGS,
  OP,
  opName,
  POSTED,
  READY,
  RUNNING,
  runOp,
  SEQ,
  SLOT_BYTES,
  STATE,
  STATUS,
  type WorkerInit,
} from "./abi.ts";

interface AnyWorker {
  terminate(): unknown;
}

const SPIN_MAIN = 200_000;
const START_TIMEOUT_MS = 60_000;

/** Worker threads over a shared memory (see the module doc). */
export class WorkerPool {
  readonly size: number;
  readonly #memory: WebAssembly.Memory;
  readonly #control: number;
  readonly #workers: AnyWorker[] = [];
  /** Views of the control block and of each slot's arguments. Shared buffers never detach and
   * the control block sits in the initial 16 MiB, so views made at start stay valid after growth. */
  readonly #i32: Int32Array;
  /** Int32 view over the whole initial memory (for the dynamic-scheduling counters). */
  readonly #mem: Int32Array;
  readonly #args: Float64Array[] = [];
  #closed = false;
  #failure: string | undefined;

  private constructor(memory: WebAssembly.Memory, control: number, size: number) {
    this.#memory = memory;
    this.#control = control;
    this.size = size;
    this.#i32 = new Int32Array(memory.buffer, control, ((size + 1) * SLOT_BYTES) / 4);
    this.#mem = new Int32Array(memory.buffer);
    for (let w = 0; w <= size; w++) {
      this.#args.push(
        new Float64Array(memory.buffer, control + w * SLOT_BYTES + ARGS_F64 * 8, MAX_ARGS),
      );
    }
  }

  /**
   * Starts `size` workers (slots 1..size at `control`) and waits until each has instantiated
   * the module.
   */
  static async start(
    module: WebAssembly.Module,
    memory: WebAssembly.Memory,
    control: number,
    size: number,
  ): Promise<WorkerPool> {
    const pool = new WorkerPool(memory, control, size);
    const url = new URL("./worker.ts", import.meta.url);
    const i32 = new Int32Array(memory.buffer);
    for (let w = 1; w <= size; w++) {
      const slot = control + w * SLOT_BYTES;
      new Int32Array(memory.buffer, slot, SLOT_BYTES / 4).fill(0);
      const init: WorkerInit = { kernelsWorker: true, module, memory, slot };
      try {
        pool.#workers.push(await spawn(url, init, (msg) => pool.#fail(msg)));
      } catch (e) {
        pool.close();
        throw new KernelError(`could not start kernel worker thread ${w}: ${e}`, { cause: e });
      }
    }
    const t0 = performance.now();
    for (let w = 1; w <= size; w++) {
      const ready = (control + w * SLOT_BYTES) / 4 + READY;
      while (Atomics.load(i32, ready) === 0) {
        if (pool.#failure !== undefined || performance.now() - t0 > START_TIMEOUT_MS) {
          pool.close();
          throw new KernelError(
            `kernel worker thread ${w} did not start: ${pool.#failure ?? "timed out"}`,
          );
        }
        await new Promise((r) => setTimeout(r, 1));
      }
    }
    return pool;
  }

  #fail(msg: string): void {
    this.#failure ??= msg;
  }

  /** Float64 view of worker w's arguments (w in 1..size). Write args, then call `run`. */
  args(w: number): Float64Array {
    return this.#args[w];
  }

  /**
   * Starts `op` on workers 1..n (their args already written), runs it on this thread with the
   * args of slot 0, then waits for the workers. Throws KernelError if a worker failed.
   */
  run(op: number, n: number, ex: KernelExports): void {
    if (this.#closed) throw new KernelError("the kernel worker pool is closed");
    if (this.#failure !== undefined) {
      throw new KernelError(`a kernel worker failed: ${this.#failure}`);
    }
    const i32 = this.#i32;
    for (let w = 1; w <= n; w++) {
      const b = (w * SLOT_BYTES) / 4;
      i32[b + OP] = op;
      i32[b + STATUS] = 0;
      Atomics.store(i32, b + STATE, POSTED);
      Atomics.add(i32, b + SEQ, 1);
      Atomics.notify(i32, b + SEQ);
    }
    let ownError: unknown;
    try {
      runOp(ex, op, this.#args[0], this.#mem);
    } catch (e) {
      ownError = e;
    }
    let failed = 0;
    for (let w = 1; w <= n; w++) {
      const b = (w * SLOT_BYTES) / 4;
      const was = Atomics.compareExchange(i32, b + STATE, POSTED, CANCELLED);
      if (was === POSTED) {
        // Not started: do its share here (same code, so the same bits).
        try {
          runOp(ex, op, this.#args[w], this.#mem);
        } catch (e) {
          ownError ??= e;
        }
        continue;
      }
      let spins = 0;
      while (Atomics.load(i32, b + STATE) === RUNNING) {
        if (++spins > SPIN_MAIN) {
          Atomics.wait(i32, b + STATE, RUNNING, 1000);
          if (this.#failure !== undefined) {
            throw new KernelError(`a kernel worker failed: ${this.#failure}`);
          }
        }
      }
      if (i32[b + STATUS] !== 0) failed = w;
    }
    if (ownError !== undefined) throw ownError;
    if (failed) {
      throw new KernelError(
        `kernel ${
          opName(op)
        } failed in worker thread ${failed} (memory access out of bounds?): check ` +
          `the pointers and sizes passed to the kernel`,
      );
    }
  }

  /**
   * Ends the workers: each is woken with EXIT and leaves its loop, so its thread ends (a worker
   * blocked in `Atomics.wait` survives `terminate()` alone in Deno, and kept its thread and the
   * shared memory alive: 10 load/dispose cycles grew a process by 30 threads and 460 MiB); then
   * terminated, for runtimes where that is what ends it.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const i32 = this.#i32;
    for (let w = 1; w <= this.size; w++) {
      const b = (w * SLOT_BYTES) / 4;
      Atomics.store(i32, b + STATE, EXIT);
      Atomics.add(i32, b + SEQ, 1);
      Atomics.notify(i32, b + SEQ);
    }
    for (const w of this.#workers) w.terminate();
    this.#workers.length = 0;
  }
}

async function spawn(
  url: URL,
  init: WorkerInit,
  onError: (msg: string) => void,
): Promise<AnyWorker> {
  const deno = (globalThis as { Deno?: unknown }).Deno !== undefined;
  if (deno) {
    const wt = await import("node:worker_threads");
    // node:worker_threads accepts only file: and data: URLs; a module imported by http(s) URL
    // starts its worker from a data: module that imports the real one.
    const entry = url.protocol === "file:" ? url : new URL(
      `data:text/javascript,${encodeURIComponent(`import ${JSON.stringify(url.href)};`)}`,
    );
    const w = new wt.Worker(entry, { workerData: init });
    w.on("error", (e: unknown) => onError(String(e)));
    w.unref();
    return w;
  }
  const w = new Worker(url, { type: "module" });
  w.onerror = (e) => {
    e.preventDefault();
    onError(e.message);
  };
  w.postMessage(init);
  return w;
}
