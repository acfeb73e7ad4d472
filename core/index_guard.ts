/**
 * Loud failures for Python habits that JavaScript answers with `undefined`: `logits[0]`,
 * `cache["pattern", 0]` (the comma operator makes that `cache[0]`), `cache["blocks.0.hook_z"]`.
 *
 * A guard is a `Proxy` placed in an object's prototype chain, beneath the class's own prototype.
 * Only lookups that miss everything above it reach it, so own properties (`t.data`, `t.shape`)
 * and methods are as fast as on a plain object; a numeric key (or a key the caller names) that
 * reaches it throws an {@link InputError} naming the call to use instead.
 * @module
 */
import { InputError } from "./errors.ts";

/** A key as JavaScript stores it: property keys are strings or symbols. */
const NUMERIC = /^-?\d+$/;

/**
 * A prototype that throws where a missed lookup looks like Python indexing. `message(key)` gives
 * the error text for a key it refuses, or undefined to let the lookup miss as usual (then
 * `undefined`, as for any object). Set it as the prototype of a class's prototype.
 *
 * @example
 * ```ts
 * import { indexGuard } from "./index_guard.ts";
 * class Box {}
 * Object.setPrototypeOf(Box.prototype, indexGuard((k) => /^\d+$/.test(k) ? `no [${k}]` : undefined));
 * try {
 *   (new Box() as unknown as Record<string, unknown>)[0];
 * } catch (e) {
 *   (e as Error).message; // "no [0]"
 * }
 * ```
 */
export function indexGuard(message: (key: string) => string | undefined): object {
  return new Proxy(Object.create(Object.prototype), {
    get(target, key, receiver) {
      if (typeof key === "string") {
        const text = message(key);
        if (text !== undefined) throw new InputError(text);
      }
      return Reflect.get(target, key, receiver);
    },
  });
}

/**
 * Whether a property key is an array-style index (`"0"`, `"-1"`), as `t[0]` and `t[-1]` look
 * it up.
 *
 * @example
 * ```ts
 * import { isIndexKey } from "./index_guard.ts";
 * isIndexKey("0"); // true
 * isIndexKey("data"); // false
 * ```
 */
export function isIndexKey(key: string): boolean {
  return NUMERIC.test(key);
}
