/**
 * One model call at a time on a backend. A pass awaits its host reads (hooks, the cache, logits),
 * and its scopes nest on the backend's one stack, so two calls started together (`Promise.all` of
 * two runs) must not interleave: each entry point that opens scopes and runs passes (`run` and its
 * siblings, `generate`, the gradient runs, the patching runs) first waits for its turn.
 * @module
 */
import type { Backend, Scope } from "../backend/backend.ts";

/** The end of the queue of calls on each backend. */
const queues = new WeakMap<Backend, Promise<void>>();

/**
 * Waits until every call that took its turn on `backend` before this one has released it, then
 * holds the backend until the returned handle is disposed (`using turn = await exclusiveUse(b)`).
 * Calls are served in the order they asked.
 *
 * @example
 * ```ts
 * import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
 * import { exclusiveUse } from "./exclusive.ts";
 * const backend = await WasmBackend.load({ threads: 1 });
 * const order: string[] = [];
 * const call = async (name: string) => {
 *   using _turn = await exclusiveUse(backend);
 *   order.push(`${name} starts`);
 *   await Promise.resolve(); // a host read
 *   order.push(`${name} ends`);
 * };
 * await Promise.all([call("a"), call("b")]);
 * order; // ["a starts", "a ends", "b starts", "b ends"]
 * ```
 */
export async function exclusiveUse(backend: Backend): Promise<Disposable> {
  const before = queues.get(backend);
  let release!: () => void;
  const mine = new Promise<void>((resolve) => release = resolve);
  queues.set(backend, before ? before.then(() => mine) : mine);
  if (before) await before;
  try {
    runNextTurnNow(backend);
  } catch (e) {
    release();
    throw e;
  }
  return { [Symbol.dispose]: release };
}

/** What runs at the start of the next turn on each backend (see {@link atNextTurn}). */
const atTurn = new WeakMap<Backend, () => void>();

/**
 * Runs `fn` once, synchronously, when the next call takes its turn on `backend`
 * ({@link exclusiveUse}), before that call opens any scope; a later registration replaces an
 * earlier one that has not run. A cache whose activations stay in the backend's memory moves them
 * to the host then (`resident_cache.ts`), so that they are never under another call's scopes.
 *
 * @example
 * ```ts
 * import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
 * import { atNextTurn, exclusiveUse } from "./exclusive.ts";
 * const backend = await WasmBackend.load({ threads: 1 });
 * let ran = 0;
 * atNextTurn(backend, () => ran++);
 * using _turn = await exclusiveUse(backend);
 * ran; // 1
 * ```
 */
export function atNextTurn(backend: Backend, fn: () => void): void {
  atTurn.set(backend, fn);
}

/**
 * Runs now, instead of at the next turn, the function {@link atNextTurn} registered on `backend`
 * (if any): for permanent uploads (weights, per-head matrices, an SAE's), which synchronous
 * setters make outside any turn and which need no scope open on the backend.
 *
 * @example
 * ```ts
 * import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
 * import { atNextTurn, runNextTurnNow } from "./exclusive.ts";
 * const backend = await WasmBackend.load({ threads: 1 });
 * let ran = 0;
 * atNextTurn(backend, () => ran++);
 * runNextTurnNow(backend);
 * runNextTurnNow(backend);
 * ran; // 1
 * ```
 */
export function runNextTurnNow(backend: Backend): void {
  const fn = atTurn.get(backend);
  atTurn.delete(backend);
  fn?.();
}

/**
 * Cancels {@link atNextTurn}'s `fn` on `backend` if it is still waiting (no other function was
 * registered since).
 */
export function cancelNextTurn(backend: Backend, fn: () => void): void {
  if (atTurn.get(backend) === fn) atTurn.delete(backend);
}

/** A backend scope held across awaits by a stream (see {@link lastingScope}). */
export interface LastingScope<T> {
  /** What `fill` returned (the stream's arrays). */
  readonly value: T;
  /**
   * Gives the scope back: it is disposed in turn, once every lasting scope opened after it on the
   * same backend is closed too (safe to call twice).
   */
  close(): Promise<void>;
}

/** The lasting scopes open on each backend, innermost last. */
const lasting = new WeakMap<Backend, Array<{ scope: Scope; closed: boolean }>>();

/**
 * A scope for a stream that keeps arrays on the backend across its awaits and across other calls
 * (`top1Accuracy` and `FactoredMatrix.rowBlocks` keep B packed while they read blocks back, and
 * the model may run between blocks). Scopes nest on the backend's one stack and disposing one
 * disposes those opened inside it, so such a scope is opened and closed in a turn of its own
 * ({@link exclusiveUse}: no call's scope is then open), `fill` allocates its arrays while it is
 * the innermost, and a stream that closes before another opened after it leaves its scope to be
 * disposed when that one closes. Two streams can then run interleaved in any order, with model
 * calls in between.
 *
 * @example
 * ```ts
 * import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
 * import { lastingScope } from "./exclusive.ts";
 * const backend = await WasmBackend.load({ threads: 1 });
 * const a = await lastingScope(backend, (s) => s.upload(new Float32Array([1, 2])));
 * const b = await lastingScope(backend, (s) => s.upload(new Float32Array([3])));
 * await a.close(); // b's arrays stay valid
 * await backend.read(b.value); // Float32Array [3]
 * await b.close(); // both are released now
 * ```
 */
export async function lastingScope<T>(
  backend: Backend,
  fill: (scope: Scope) => T,
): Promise<LastingScope<T>> {
  using _turn = await exclusiveUse(backend);
  let open = lasting.get(backend);
  if (!open) lasting.set(backend, open = []);
  const entry = { scope: backend.scope(), closed: false };
  open.push(entry);
  let value: T;
  try {
    value = fill(entry.scope);
  } catch (e) {
    open.pop();
    entry.scope[Symbol.dispose]();
    throw e;
  }
  return {
    value,
    async close() {
      if (entry.closed) return;
      entry.closed = true;
      using _turn = await exclusiveUse(backend);
      while (open.length > 0 && open.at(-1)!.closed) open.pop()!.scope[Symbol.dispose]();
    },
  };
}
