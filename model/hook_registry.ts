/**
 * Hooks that stay on a model between runs, as TransformerLens's `add_hook`, `reset_hooks` and the
 * `hooks(...)` context manager keep them: forward hooks run in every pass of the model (after
 * being added, before the hooks a single call passes), backward hooks are kept for the gradient
 * passes.
 * @module
 */
import { HookError } from "../core/errors.ts";
import { checkOptions } from "../core/options.ts";
import { type BwdHook, checkHookFn, type FwdHook, type HookFilter, type HookFn } from "./hooks.ts";

/** Which pass a hook belongs to: the forward pass, or the backward (gradient) pass. */
export type HookDirection = "fwd" | "bwd";

/** Options of {@link HookRegistry.add} (`model.addHook`). */
export interface AddHookOptions {
  /** `"fwd"` (default) runs the hook in forward passes; `"bwd"` on gradients. */
  dir?: HookDirection;
  /** A permanent hook survives `resetHooks()` (default false). */
  isPermanent?: boolean;
  /** Run before the hooks already on the same points instead of after (default false). */
  prepend?: boolean;
}

/** Options of {@link HookRegistry.reset} (`model.resetHooks`). */
export interface ResetHooksOptions {
  /** Also remove permanent hooks (default false). */
  includingPermanent?: boolean;
  /** Which hooks to remove (default `"both"`). */
  direction?: HookDirection | "both";
}

/** One registered hook. */
export interface RegisteredHook {
  /** A hook name or a predicate over names. */
  filter: HookFilter;
  /** The hook function. */
  fn: HookFn;
  /** Whether `reset()` keeps it unless asked otherwise. */
  permanent: boolean;
}

/**
 * A model's registered hooks, by direction, in the order they run. The model's runs read
 * `entries("fwd")`; gradient passes read `entries("bwd")`.
 *
 * @example
 * ```ts
 * import { HookRegistry } from "./hook_registry.ts";
 * const hooks = new HookRegistry((name) => name);
 * const remove = hooks.add("blocks.0.hook_mlp_out", (act) => void act.data.fill(0));
 * hooks.entries("fwd").length; // 1
 * remove();
 * hooks.entries("fwd").length; // 0
 * ```
 */
export class HookRegistry {
  readonly #hooks: Record<HookDirection, RegisteredHook[]> = { fwd: [], bwd: [] };

  /**
   * @param checkName Validates a string filter when a hook is added (throws a HookError for a
   *   name the model does not have) and returns the name to store.
   */
  constructor(private readonly checkName: (name: string) => string) {}

  /**
   * Registers `fn` at every hook point `filter` selects. Returns a function that removes this one
   * hook (TransformerLens returns a handle with `.remove()`).
   */
  add(filter: HookFilter, fn: HookFn, opts: AddHookOptions = {}): () => void {
    checkOptions(opts, ["dir", "isPermanent", "prepend"], "addHook");
    const dir = opts.dir ?? "fwd";
    if (dir !== "fwd" && dir !== "bwd") {
      throw new HookError(`addHook: dir must be "fwd" or "bwd", got ${JSON.stringify(dir)}`);
    }
    if (typeof filter === "string") filter = this.checkName(filter);
    else if (typeof filter !== "function") {
      throw new HookError("addHook: the first argument must be a hook name or a predicate");
    }
    checkHookFn(fn, typeof filter === "string" ? `"${filter}"` : "a filter");
    const entry: RegisteredHook = { filter, fn, permanent: opts.isPermanent === true };
    const list = this.#hooks[dir];
    if (opts.prepend) list.unshift(entry);
    else list.push(entry);
    return () => {
      const i = list.indexOf(entry);
      if (i >= 0) list.splice(i, 1);
    };
  }

  /** Removes the non-permanent hooks (and the permanent ones with `includingPermanent`). */
  reset(opts: ResetHooksOptions = {}): void {
    checkOptions(opts, ["includingPermanent", "direction"], "resetHooks");
    const direction = opts.direction ?? "both";
    if (direction !== "fwd" && direction !== "bwd" && direction !== "both") {
      throw new HookError(
        `resetHooks: direction must be "fwd", "bwd" or "both", got ${JSON.stringify(direction)}`,
      );
    }
    for (const dir of ["fwd", "bwd"] as const) {
      if (direction !== "both" && direction !== dir) continue;
      const keep = this.#hooks[dir].filter((h) => h.permanent && !opts.includingPermanent);
      this.#hooks[dir].splice(0, Infinity, ...keep);
    }
  }

  /** The registered hooks of one direction, in the order they run (a copy). */
  entries(dir: HookDirection): RegisteredHook[] {
    return [...this.#hooks[dir]];
  }

  /**
   * Runs `fn` with the given pairs registered, and removes them afterwards even if it throws
   * (TransformerLens's `hooks()` context manager).
   */
  async scoped<R>(
    pairs: { fwd?: FwdHook[]; bwd?: BwdHook[] },
    fn: () => R | Promise<R>,
  ): Promise<R> {
    const removers: (() => void)[] = [];
    try {
      for (const dir of ["fwd", "bwd"] as const) {
        for (const pair of checkPairs(pairs[dir] ?? [], `${dir}Hooks`)) {
          removers.push(this.add(pair[0], pair[1], { dir }));
        }
      }
      return await fn();
    } finally {
      for (const remove of removers) remove();
    }
  }

  /**
   * The hooks of one pass in direction `dir` by full hook name, in the order they run: the
   * registered ones, then `extra` (a call's `fwdHooks` or `bwdHooks`). Predicates are matched
   * against `names` (the model's hook points now); a string filter must be one of them
   * (`checkName` throws otherwise).
   */
  hooksOf(dir: HookDirection, extra: FwdHook[], names: readonly string[]): Map<string, HookFn[]> {
    const hooks = new Map<string, HookFn[]>();
    const attach = (filter: HookFilter, fn: HookFn) => {
      const matched = typeof filter === "function"
        ? names.filter((n) => filter(n))
        : [this.checkName(filter)];
      for (const n of matched) hooks.set(n, [...(hooks.get(n) ?? []), fn]);
    };
    for (const { filter, fn } of this.#hooks[dir]) attach(filter, fn);
    for (const [filter, fn] of checkPairs(extra, `${dir}Hooks`)) {
      checkHookFn(fn, typeof filter === "string" ? `"${filter}"` : "a filter");
      attach(filter, fn);
    }
    return hooks;
  }
}

/** `pairs` as `[filter, fn]` pairs, or a HookError naming the option. */
function checkPairs(pairs: unknown, what: string): FwdHook[] {
  if (!Array.isArray(pairs) || pairs.some((p) => !Array.isArray(p) || p.length !== 2)) {
    throw new HookError(`${what} must be an array of [nameOrPredicate, hookFunction] pairs`);
  }
  return pairs as FwdHook[];
}
