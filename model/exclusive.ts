/**
 * One model call at a time on a backend. A pass awaits its host reads (hooks, the cache, logits),
 * and its scopes nest on the backend's one stack, so two calls started together (`Promise.all` of
 * two runs) must not interleave: each entry point that opens scopes and runs passes (`run` and its
 * siblings, `generate`, the gradient runs, the patching runs) first waits for its turn.
 * @module
 */
import type { Backend } from "../backend/backend.ts";

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
  return { [Symbol.dispose]: release };
}
