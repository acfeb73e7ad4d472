/**
 * Hook functions and the plumbing that hands activations out of WebAssembly memory to them (and
 * their replacements back in).
 * @module
 */
import { HookError } from "../core/errors.ts";
import type { Kernels } from "../backend/wasm/kernels.ts";
import type { Tensor } from "../core/tensor.ts";
import { locateHook } from "./hook_points.ts";

/** What a hook function learns about where it is called. */
export interface HookContext {
  /** The full hook name, e.g. `blocks.3.hook_mlp_out`. */
  name: string;
  /** The block index, or null for `hook_embed`, `hook_pos_embed` and `ln_final.*`. */
  layer: number | null;
}

/**
 * A forward hook. It receives an owned copy of the activation in TransformerLens's shape. To
 * patch, return a replacement of the same shape, or edit `activation.data` in place: either way
 * the result is copied back before the next kernel runs.
 *
 * @example
 * ```ts ignore
 * // Zero-ablate head 7 of layer 1's output z: [batch, pos, head, d_head].
 * const ablate: HookFn = (z) => {
 *   const [, , nHeads, dHead] = z.shape;
 *   for (let i = 0; i < z.data.length; i += nHeads * dHead) z.data.fill(0, i + 7 * dHead, i + 8 * dHead);
 * };
 * ```
 */
export type HookFn = (activation: Tensor, hook: HookContext) => Tensor | void;

/** Selects hook points: an exact name, or a predicate over names (TransformerLens's filters). */
export type HookFilter = string | ((name: string) => boolean);

/** A `[filter, function]` pair as passed to `runWithHooks({ fwdHooks })`. */
export type FwdHook = [HookFilter, HookFn];

/**
 * The hook points a run visits: which to cache, which to call hooks on. The forward pass asks
 * `wants(name)` before any copy, so a run with no hooks copies nothing.
 */
export class HookSession {
  readonly cached: Map<string, Tensor> = new Map();

  constructor(
    private readonly k: Kernels,
    private readonly hooks: ReadonlyMap<string, HookFn[]>,
    private readonly cacheNames: ReadonlySet<string>,
  ) {}

  /** Whether anything (a hook or the cache) reads this hook point. */
  wants(name: string): boolean {
    return this.hooks.has(name) || this.cacheNames.has(name);
  }

  /** Whether a hook (which may modify it) is attached at this point. */
  hooked(name: string): boolean {
    return this.hooks.has(name);
  }

  /**
   * Copies the activation out (rows x cols, row stride `stride` floats), runs the hooks, writes
   * the result back when hooks ran, caches it when asked. Returns true when hooks ran.
   * `hook_scale` points are read-only: the LayerNorm kernel has already used the scale, so a
   * replacement would silently do nothing; returning one is an error.
   */
  visit(
    name: string,
    ptr: number,
    shape: number[],
    rows: number,
    cols: number,
    stride = cols,
  ): boolean {
    if (!this.wants(name)) return false;
    let act: Tensor = { data: this.k.readStrided(ptr, rows, cols, stride), shape };
    const fns = this.hooks.get(name);
    if (fns) {
      const ctx = { name, layer: locateHook(name).layer };
      for (const fn of fns) {
        const out = fn(act, ctx);
        if (out === undefined || out === null || out === act) continue;
        if (name.endsWith("hook_scale")) {
          throw new HookError(
            `a hook on ${name} returned a replacement, but LayerNorm scales are read-only here: ` +
              `patch the matching hook_normalized instead`,
          );
        }
        act = checkReplacement(name, act, out);
      }
      if (!name.endsWith("hook_scale")) this.k.writeStrided(ptr, act.data, rows, cols, stride);
    }
    if (this.cacheNames.has(name)) this.cached.set(name, act);
    return fns !== undefined;
  }
}

function checkReplacement(name: string, before: Tensor, out: Tensor): Tensor {
  if (!(out.data instanceof Float32Array) || !Array.isArray(out.shape)) {
    throw new HookError(
      `hook on "${name}" returned something that is not a Tensor { data: Float32Array, shape }`,
    );
  }
  const same = out.shape.length === before.shape.length &&
    out.shape.every((d, i) => d === before.shape[i]) && out.data.length === before.data.length;
  if (!same) {
    throw new HookError(
      `hook on "${name}" returned shape [${out.shape}] (${out.data.length} values) but the ` +
        `activation has shape [${before.shape}]: a replacement must keep the shape`,
    );
  }
  return out;
}
