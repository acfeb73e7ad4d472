/**
 * Inline display of Tensors and ActivationCaches in `deno jupyter`.
 *
 * Deno's kernel shows a cell's value as HTML when the value has a `Symbol.for("Jupyter.display")`
 * method, looked up like any property (so on its prototype too), and has no other hook. Views
 * (`HtmlView`) and `ActivationCache` (a class) could carry the method themselves, but a `Tensor`
 * is a plain `{ data, shape }` object made in a hundred places. So `enableNotebookDisplay`
 * defines that symbol once, on `Object.prototype`, as a non-enumerable getter that answers a
 * display method only for a Tensor (an object whose own keys are exactly `data`, a
 * `Float32Array`, and `shape`, matching its length) or an ActivationCache, and `undefined` for
 * every other object, which the kernel then shows as before. Nothing else sees it: symbol keys
 * are skipped by `for...in`, `Object.keys`, `JSON.stringify` and `Deno.inspect`.
 *
 * Importing this module (or `viz/mod.ts`, or `mod.ts`) inside a Jupyter kernel enables it; it
 * does nothing anywhere else unless called. `disableNotebookDisplay` removes it.
 * @module
 */
import { numel, type Tensor } from "../core/tensor.ts";
import { ActivationCache } from "../model/activation_cache.ts";
import { JUPYTER_DISPLAY, type MimeBundle } from "./html.ts";
import { cacheView, tensorView } from "./tensor_view.ts";

/** A plain Tensor: own keys exactly `data` (Float32Array) and `shape`, consistent. */
function isPlainTensor(x: object): x is Tensor {
  const keys = Object.keys(x);
  if (keys.length !== 2 || !keys.includes("data") || !keys.includes("shape")) return false;
  const { data, shape } = x as Tensor;
  return data instanceof Float32Array && Array.isArray(shape) &&
    shape.every((d) => Number.isInteger(d) && d >= 0) && numel(shape) === data.length;
}

/** The display method for `x`, when it is a Tensor or a cache. */
function displayFor(x: unknown): (() => MimeBundle) | undefined {
  if (typeof x !== "object" || x === null) return undefined;
  if (x instanceof ActivationCache) return () => cacheView(x)[JUPYTER_DISPLAY]();
  if (isPlainTensor(x)) return () => tensorView(x)[JUPYTER_DISPLAY]();
  return undefined;
}

function displayGetter(this: unknown): (() => MimeBundle) | undefined {
  return displayFor(this);
}

/** Whether inline display of Tensors and caches is on. */
export function notebookDisplayEnabled(): boolean {
  const d = Object.getOwnPropertyDescriptor(Object.prototype, JUPYTER_DISPLAY);
  return d?.get === displayGetter;
}

/**
 * Makes a cell whose value is a Tensor or an ActivationCache show as HTML in `deno jupyter` (a
 * compact table: shape, dtype, values with ellipses; the cache's hook names and shapes). Called
 * on import inside a Jupyter kernel; idempotent. Leaves any other definition of the symbol on
 * `Object.prototype` alone (and returns false).
 *
 * @example
 * ```ts
 * import { disableNotebookDisplay, enableNotebookDisplay } from "./notebook.ts";
 * enableNotebookDisplay();
 * const t = { data: new Float32Array([1, 2, 3]), shape: [3] };
 * const bundle = (t as any)[Symbol.for("Jupyter.display")]();
 * bundle["text/plain"]; // "Tensor float32 [3]: min 1, max 3, mean 2"
 * ({ a: 1 } as any)[Symbol.for("Jupyter.display")]; // undefined: other objects are untouched
 * disableNotebookDisplay();
 * ```
 */
export function enableNotebookDisplay(): boolean {
  if (notebookDisplayEnabled()) return true;
  if (Object.getOwnPropertyDescriptor(Object.prototype, JUPYTER_DISPLAY)) return false;
  Object.defineProperty(Object.prototype, JUPYTER_DISPLAY, {
    get: displayGetter,
    configurable: true,
    enumerable: false,
  });
  return true;
}

/** Removes what {@link enableNotebookDisplay} defined (and nothing else). */
export function disableNotebookDisplay(): void {
  if (notebookDisplayEnabled()) {
    delete (Object.prototype as Record<symbol, unknown>)[JUPYTER_DISPLAY];
  }
}

/** Whether this code runs inside Deno's Jupyter kernel. */
export function inJupyter(): boolean {
  try {
    // Outside `deno jupyter`, reading Deno.jupyter throws.
    return typeof Deno !== "undefined" &&
      typeof (Deno as { jupyter?: unknown }).jupyter === "object";
  } catch {
    return false;
  }
}
