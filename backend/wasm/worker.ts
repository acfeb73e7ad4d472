/**
 * A kernel worker thread: instantiates the kernel module over the shared memory it is given and
 * serves its slot of the control block (see `pool.ts`) until the pool closes: wait for a new
 * sequence number, run the op with the float64 arguments in the slot, report done; on EXIT,
 * return, so that the thread ends (and its hold on the shared memory with it).
 *
 * Started by `WorkerPool`, as a `node:worker_threads` worker in Deno (init in `workerData`) or
 * as a module Web Worker elsewhere (init as the first message).
 * @module
 */
import {
  ARGS_F64,
  EXIT,
  IDLE,
  type KernelExports,
  MAX_ARGS,
  OP,
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

/** Spin this many polls after a job before sleeping in Atomics.wait (back-to-back calls). */
const SPIN = 100_000;

function serve(init: WorkerInit): void {
  const abort = () => {
    throw new Error("kernel aborted");
  };
  const instance = new WebAssembly.Instance(init.module, { env: { memory: init.memory, abort } });
  const ex = instance.exports as unknown as KernelExports;
  const i32 = new Int32Array(init.memory.buffer, init.slot, SLOT_BYTES / 4);
  const a = new Float64Array(init.memory.buffer, init.slot + ARGS_F64 * 8, MAX_ARGS);
  const mem = new Int32Array(init.memory.buffer);
  Atomics.store(i32, READY, 1);
  Atomics.notify(i32, READY);
  let seen = Atomics.load(i32, SEQ);
  // Closed before this thread got here (EXIT is stored before SEQ moves, so one of the two shows).
  if (Atomics.load(i32, STATE) === EXIT) return;
  for (;;) {
    let s = Atomics.load(i32, SEQ);
    let spins = 0;
    while (s === seen) {
      if (++spins > SPIN) {
        Atomics.wait(i32, SEQ, seen);
        spins = 0;
      }
      s = Atomics.load(i32, SEQ);
    }
    seen = s;
    if (Atomics.load(i32, STATE) === EXIT) return;
    // Claim the job; the caller may have taken it back already (then it runs it itself).
    if (Atomics.compareExchange(i32, STATE, POSTED, RUNNING) !== POSTED) continue;
    try {
      runOp(ex, i32[OP], a, mem);
      i32[STATUS] = 0;
    } catch {
      i32[STATUS] = 1;
    }
    Atomics.store(i32, STATE, IDLE);
    Atomics.notify(i32, STATE);
  }
}

function isInit(x: unknown): x is WorkerInit {
  return typeof x === "object" && x !== null && (x as WorkerInit).kernelsWorker === true;
}

const g = globalThis as unknown as {
  Deno?: unknown;
  onmessage: ((e: MessageEvent) => void) | null;
};
let started = false;
if (g.Deno !== undefined) {
  const wt = await import("node:worker_threads");
  if (isInit(wt.workerData)) {
    started = true;
    serve(wt.workerData);
  }
}
if (!started) {
  g.onmessage = (e: MessageEvent) => {
    if (isInit(e.data)) {
      g.onmessage = null;
      serve(e.data);
    }
  };
}
