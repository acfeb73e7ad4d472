/**
 * The activations a run cached, under TransformerLens's hook names.
 * @module
 */
import { HookError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { getActName } from "./hook_table.ts";

/**
 * Activations by hook name, as `run_with_cache` returns them in TransformerLens. Each tensor is
 * an owned copy with TransformerLens's shape (for example `[batch, head, query, key]` for
 * `hook_pattern`).
 *
 * @example
 * ```ts ignore
 * const { cache } = await model.runWithCache(tokens, { namesFilter: (n) => n.endsWith("hook_pattern") });
 * const pattern = cache.get("pattern", 1); // same as cache.get("blocks.1.attn.hook_pattern")
 * ```
 */
export class ActivationCache {
  readonly #acts: Map<string, Tensor>;
  readonly #nLayers: number | undefined;

  /**
   * Wraps a map of hook name -> activation (the model builds these).
   * @param acts Activations by full hook name.
   * @param nLayers The model's layer count, so that negative layers count from the end.
   */
  constructor(acts: Map<string, Tensor>, nLayers?: number) {
    this.#acts = acts;
    this.#nLayers = nLayers;
  }

  /**
   * The activation cached at a hook point: a full name, or a short name with a layer
   * (`get("mlp_out", 3)`, `get("resid_pre", -1)` for the last block), as {@link getActName}
   * builds them.
   */
  get(name: string, layer?: number, layerType?: string): Tensor {
    const full = getActName(name, layer, layerType, this.#nLayers);
    const t = this.#acts.get(full);
    if (!t) {
      const have = [...this.#acts.keys()];
      throw new HookError(
        `"${full}" is not in this cache` +
          (have.length
            ? ` (it holds ${have.length} names, e.g. ${have.slice(0, 3).join(", ")})`
            : " (it is empty)") +
          `; widen namesFilter in runWithCache to keep it`,
      );
    }
    return t;
  }

  /** Whether the cache holds an activation for this name. */
  has(name: string, layer?: number, layerType?: string): boolean {
    return this.#acts.has(getActName(name, layer, layerType, this.#nLayers));
  }

  /** The cached hook names, in forward order. */
  keys(): string[] {
    return [...this.#acts.keys()];
  }

  /** `[name, activation]` pairs, in forward order. */
  entries(): [string, Tensor][] {
    return [...this.#acts.entries()];
  }

  /** How many activations are cached. */
  get size(): number {
    return this.#acts.size;
  }
}
