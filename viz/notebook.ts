/**
 * Inline display of Tensors and ActivationCaches in `deno jupyter`.
 *
 * Deno's kernel shows a cell's value as HTML when the value has a `Symbol.for("Jupyter.display")`
 * method, looked up like any property (so on its prototype too), and has no other hook. Views
 * (`HtmlView`) carry the method themselves. For the tensors the library hands out (runs, caches,
 * hooks and the tensor functions return them with one shared prototype, see `guardTensor`) and for
 * `ActivationCache`, `enableNotebookDisplay` defines the method, non-enumerable, on those two
 * prototypes only: no global object is touched, and a Tensor written as a literal keeps its
 * ordinary display (pass it through `guardTensor`, or show `tensorView(t)`).
 *
 * Importing this module (or `viz/mod.ts`, or `mod.ts`) inside a Jupyter kernel enables it; it
 * does nothing anywhere else unless called. `disableNotebookDisplay` removes it.
 * @module
 */
import { guardTensor, type Tensor } from "../core/tensor.ts";
import { ActivationCache } from "../model/activation_cache.ts";
import { JUPYTER_DISPLAY, type MimeBundle } from "./html.ts";
import { cacheView, tensorView } from "./tensor_view.ts";

/** The prototype shared by the tensors the library hands out. */
const TENSOR_PROTOTYPE: object = Object.getPrototypeOf(
  guardTensor({ data: new Float32Array(0), shape: [0] }),
);

function showTensor(this: Tensor): MimeBundle {
  return tensorView(this)[JUPYTER_DISPLAY]();
}

function showCache(this: ActivationCache): MimeBundle {
  return cacheView(this)[JUPYTER_DISPLAY]();
}

const DISPLAYS: [object, (this: never) => MimeBundle][] = [
  [TENSOR_PROTOTYPE, showTensor],
  [ActivationCache.prototype, showCache],
];

/** Whether inline display of Tensors and caches is on. */
export function notebookDisplayEnabled(): boolean {
  return DISPLAYS.every(([proto, show]) =>
    Object.getOwnPropertyDescriptor(proto, JUPYTER_DISPLAY)?.value === show
  );
}

/**
 * Makes a cell whose value is a Tensor the library handed out, or an ActivationCache, show as
 * HTML in `deno jupyter` (a compact table: shape, dtype, values with ellipses; the cache's hook
 * names and shapes). Called on import inside a Jupyter kernel; idempotent.
 *
 * @example
 * ```ts
 * import { disableNotebookDisplay, enableNotebookDisplay } from "./notebook.ts";
 * import { guardTensor } from "../core/tensor.ts";
 * enableNotebookDisplay();
 * const t = guardTensor({ data: new Float32Array([1, 2, 3]), shape: [3] });
 * const bundle = (t as any)[Symbol.for("Jupyter.display")]();
 * bundle["text/plain"]; // "Tensor float32 [3]: min 1, max 3, mean 2"
 * ({ a: 1 } as any)[Symbol.for("Jupyter.display")]; // undefined: other objects are untouched
 * disableNotebookDisplay();
 * ```
 */
export function enableNotebookDisplay(): boolean {
  for (const [proto, show] of DISPLAYS) {
    Object.defineProperty(proto, JUPYTER_DISPLAY, {
      value: show,
      configurable: true,
      enumerable: false,
      writable: false,
    });
  }
  return true;
}

/** Removes what {@link enableNotebookDisplay} defined (and nothing else). */
export function disableNotebookDisplay(): void {
  for (const [proto, show] of DISPLAYS) {
    if (Object.getOwnPropertyDescriptor(proto, JUPYTER_DISPLAY)?.value === show) {
      delete (proto as Record<symbol, unknown>)[JUPYTER_DISPLAY];
    }
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
