/**
 * Hook functions, and the session that hands activations out of the backend to them (and their
 * replacements back in) and keeps the ones a cache asked for.
 * @module
 */
import type { Backend, DeviceArray } from "../backend/backend.ts";
import { HookError } from "../core/errors.ts";
import { type Tensor, tensor } from "../core/tensor.ts";
import { HOOK_POINTS, hookName, type HookOptions, type HookPoint } from "./hook_table.ts";
import { ResidentCache } from "./resident_cache.ts";

/** What a hook function learns about where it is called. */
export interface HookContext {
  /** The full hook name, e.g. `blocks.3.hook_mlp_out`. */
  name: string;
  /** The block index, or null for `hook_embed`, `hook_pos_embed` and `ln_final.*`. */
  layer: number | null;
  /**
   * The hook points nested under this one (a spliced SAE's `<name>.hook_sae_acts_post`, ...):
   * the function hooked here visits them so that their own hooks run and the cache keeps them.
   */
  nested?: NestedHookPoints;
}

/**
 * Hook points that live inside a hook function rather than in the forward pass: a sparse
 * autoencoder spliced at `blocks.8.hook_resid_pre` computes `blocks.8.hook_resid_pre.hook_sae_acts_post`
 * on the host side of the hook and visits it here, so hooks on it run and the cache keeps it.
 */
export interface NestedHookPoints {
  /** Whether a hook or the cache reads `name`. */
  wants(name: string): boolean;
  /** Whether a hook (which may change the value) is on `name`. */
  hooked(name: string): boolean;
  /**
   * Runs the hooks on `name` over `act` (an owned copy), keeps the result when the cache asks
   * for it, and returns the value after the hooks (a replacement must keep the shape).
   */
  visit(name: string, act: Tensor): Tensor;
}

/**
 * A forward hook. It receives an owned copy of the activation in TransformerLens's shape. To
 * patch, return a replacement of the same shape, or edit `activation.data` in place: either way
 * the result is copied back before the next kernel runs. Hooks must be synchronous.
 *
 * One rule for read-only hook points (`hook_scale`, whose value the normalization has already
 * used): changing one, by returning a different tensor or by editing it in place, is the same
 * {@link HookError}; reading it is fine.
 *
 * @example
 * ```ts
 * import type { HookFn } from "./hooks.ts";
 * // Zero-ablate head 7 of a layer's z: [batch, pos, head, d_head].
 * const ablate: HookFn = (z) => {
 *   const [, , nHeads, dHead] = z.shape;
 *   for (let i = 0; i < z.data.length; i += nHeads * dHead) {
 *     z.data.fill(0, i + 7 * dHead, i + 8 * dHead);
 *   }
 * };
 * ```
 */
export type HookFn = (activation: Tensor, hook: HookContext) => Tensor | void;

/** Selects hook points: an exact name, or a predicate over names (TransformerLens's filters). */
export type HookFilter = string | ((name: string) => boolean);

/** A `[filter, function]` pair as passed to `runWithHooks({ fwdHooks })`. */
export type FwdHook = [HookFilter, HookFn];

/**
 * A `[filter, function]` pair as passed to `runWithHooks({ bwdHooks })`: the function receives
 * the gradient of the metric with respect to the activation (an owned copy, the activation's
 * shape) and may return a replacement, or edit it in place, to change the gradient that flows on.
 * Several hooks at one point run in order, each seeing the previous one's result.
 */
export type BwdHook = [HookFilter, HookFn];

/** Every hook point's full name, by declaration index and layer (built once per model). */
export class HookNames {
  readonly #names: string[][];

  /** Names for a model of `nLayers` blocks. */
  constructor(nLayers: number) {
    this.#names = HOOK_POINTS.map((p) =>
      p.inBlock ? Array.from({ length: nLayers }, (_, l) => hookName(p, l)) : [p.local]
    );
  }

  /** The full name of `point` at `layer` (ignored outside blocks). */
  of(point: HookPoint, layer: number | null): string {
    return this.#names[point.index][point.inBlock ? layer! : 0];
  }
}

/** What a forward hook changed: the activation after the hooks, and which elements differ. */
export interface HookChange {
  /** The activation as the hooks left it, TransformerLens's shape. */
  value: Tensor;
  /** 1 where the hooks changed the element (compared bit for bit), else 0. */
  mask: Uint8Array;
}

/** Options of {@linkcode HookSession}. */
export interface HookSessionOptions {
  /** The optional hook points that are on (they change some shapes, e.g. ln1's). */
  hookOptions?: Readonly<HookOptions>;
  /**
   * A backward pass's session: the values visited are gradients, and hooks may replace a
   * read-only point's gradient (hook_scale's), since it still flows on.
   */
  backward?: boolean;
  /** Keep what the hooks changed at each hook point in {@linkcode HookSession.changes}. */
  trackChanges?: boolean;
  /**
   * What the cache keeps of each activation (default: all of it), e.g. some positions only
   * (`runWithCache`'s `posSlice`), so the rest is not held until the run ends.
   */
  cacheAs?: (name: string, act: Tensor) => Tensor;
  /**
   * Keep the activations only the cache reads in the backend's memory until they are read
   * ({@linkcode HookSession.holdCached}, `resident_cache.ts`); without `cacheAs` only.
   */
  holdCache?: boolean;
}

/** Where an activation sits in the backend: `rows` rows of `cols` floats, `stride` apart. */
export interface RowLayout {
  rows: number;
  cols: number;
  stride: number;
}

/**
 * The hook points one run visits: which to cache, which to call hooks on. The forward pass asks
 * `wants(point, layer)` before any copy, so a run with no hooks copies nothing.
 */
export class HookSession {
  /** Activations kept for the cache, by full name, in the order they were visited. */
  readonly cached: Map<string, Tensor> = new Map();
  /** With `trackChanges`: what the hooks changed, by full name (unchanged points absent). */
  readonly changes: Map<string, HookChange> = new Map();
  /** The optional hook points that are on. */
  readonly options: Readonly<HookOptions>;
  readonly #backward: boolean;
  readonly #trackChanges: boolean;
  /** Cache-only reads issued and not yet awaited (see {@linkcode HookSession.settled}). */
  #pending: Promise<void>[] = [];
  #failed: unknown = null;

  /** The nested hook points' side of this session (see {@linkcode NestedHookPoints}). */
  readonly #nested: NestedHookPoints = {
    wants: (name) => this.hooks.has(name) || this.cacheNames.has(name),
    hooked: (name) => this.hooks.has(name),
    visit: (name, act) => this.#visitNested(name, act),
  };
  readonly #cacheAs: ((name: string, act: Tensor) => Tensor) | undefined;
  readonly #holdCache: boolean;
  /** Where the activations only the cache reads are kept, once {@linkcode holdCached} opened it. */
  #held: ResidentCache | undefined;

  /**
   * @param backend Where the activations live.
   * @param names The model's name table.
   * @param hooks Hook functions by full name, in the order they run.
   * @param cacheNames Full names to keep in `cached`.
   * @param opts The optional hook points that are on; a backward session; tracking of changes.
   */
  constructor(
    private readonly backend: Backend,
    private readonly names: HookNames,
    private readonly hooks: ReadonlyMap<string, HookFn[]> = new Map(),
    private readonly cacheNames: ReadonlySet<string> = new Set(),
    opts: HookSessionOptions = {},
  ) {
    this.options = opts.hookOptions ?? {};
    this.#backward = !!opts.backward;
    this.#trackChanges = !!opts.trackChanges;
    this.#cacheAs = opts.cacheAs;
    this.#holdCache = !!opts.holdCache && !opts.cacheAs;
  }

  /**
   * With `holdCache`: opens the backend memory for the activations that only the cache reads (no
   * hook on them), `floatsOf(point)` floats each, so that the pass copies them there rather than
   * to the host. Call it before the pass opens its scope, which then nests inside. Activations
   * that do not fit, and all of them where the backend cannot hold them (`ResidentCache.open`),
   * are read to the host as they are visited.
   */
  holdCached(nLayers: number, floatsOf: (point: HookPoint) => number): void {
    if (!this.#holdCache || this.#held) return;
    let floats = 0;
    for (const p of HOOK_POINTS) {
      for (let l = 0; l < (p.inBlock ? nLayers : 1); l++) {
        const name = this.names.of(p, l);
        if (this.cacheNames.has(name) && !this.hooks.has(name)) floats += floatsOf(p);
      }
    }
    this.#held = ResidentCache.open(this.backend, floats);
  }

  /** The backend memory holding cached activations (see {@linkcode holdCached}), if any. */
  get held(): ResidentCache | undefined {
    return this.#held;
  }

  /** Whether anything (a hook or the cache) reads this hook point. */
  wants(point: HookPoint, layer: number | null): boolean {
    if (this.hooks.size === 0 && this.cacheNames.size === 0) return false;
    const name = this.names.of(point, layer);
    return this.hooks.has(name) || this.cacheNames.has(name);
  }

  /** Whether a hook (which may modify it) is attached at this hook point. */
  hooked(point: HookPoint, layer: number | null): boolean {
    return this.hooks.size > 0 && this.hooks.has(this.names.of(point, layer));
  }

  /** Whether the session does nothing at any hook point. */
  get silent(): boolean {
    return this.hooks.size === 0 && this.cacheNames.size === 0;
  }

  /**
   * Copies the activation out of `x` (laid out as `layout`), runs the hooks, writes the result
   * back when hooks ran, and caches it when asked. Returns true when hooks ran. A read-only point
   * (`point.readOnly`) refuses any change, whether returned or made in place (in a forward
   * session).
   */
  async visit(
    point: HookPoint,
    layer: number | null,
    x: DeviceArray,
    shape: number[],
    layout: RowLayout,
  ): Promise<boolean> {
    if (!this.wants(point, layer)) return false;
    const name = this.names.of(point, layer);
    const { rows, cols, stride } = layout;
    if (!this.hooks.has(name)) {
      // Only the cache reads it. Where the session holds the cache, copy it within the backend,
      // to be read to the host when wanted (resident_cache.ts).
      const kept = this.#held?.take(rows * cols);
      if (kept) {
        this.backend.copyRows(x, rows, cols, stride, kept);
        this.cached.set(name, this.#held!.tensor(kept, shape));
        return false;
      }
      // Otherwise issue the read and go on, so that an asynchronous device runs the rest of the
      // pass meanwhile (one wait for all of them, in settled()). The entry is placed now to keep
      // the cache in visiting order.
      this.cached.set(name, tensor(new Float32Array(0), [0]));
      this.#pending.push(
        this.backend.readRows(x, rows, cols, stride).then((data) => {
          const act = tensor(data, shape);
          this.cached.set(name, this.#cacheAs ? this.#cacheAs(name, act) : act);
        }).catch((e) => void (this.#failed ??= e)),
      );
      return false;
    }
    let act: Tensor = tensor(await this.backend.readRows(x, rows, cols, stride), shape);
    const fns = this.hooks.get(name);
    if (fns) {
      const readOnly = point.readOnly && !this.#backward;
      const before = readOnly || this.#trackChanges ? act.data.slice() : undefined;
      const ctx: HookContext = {
        name,
        layer: point.inBlock ? layer : null,
        nested: this.#nested,
      };
      for (const fn of fns) {
        // a library splice (an SAE) reads kernels' results: the session awaits it
        const out = (AWAITED_HOOKS.has(fn) ? await fn(act, ctx) : fn(act, ctx)) as unknown;
        act = this.#hookResult(name, act, out, rows * cols);
      }
      const mask = before && changedMask(before, act.data);
      if (readOnly) {
        if (mask) {
          throw new HookError(`a hook changed "${name}", which is read-only: ${point.readOnly}`);
        }
      } else {
        this.backend.writeRows(x, act.data, rows, cols, stride);
        if (mask && this.#trackChanges) this.changes.set(name, { value: act, mask });
      }
    }
    if (this.cacheNames.has(name)) {
      this.cached.set(name, this.#cacheAs ? this.#cacheAs(name, act) : act);
    }
    return fns !== undefined;
  }

  /**
   * Waits for the cache reads that {@linkcode HookSession.visit} issued without awaiting; the
   * passes call it before they return, so `cached` is complete once a pass has resolved.
   * @throws the first error a read met (a lost device, say).
   */
  async settled(): Promise<void> {
    const pending = this.#pending;
    this.#pending = [];
    await Promise.all(pending);
    if (this.#failed !== null) {
      const e = this.#failed;
      this.#failed = null;
      throw e;
    }
  }

  /**
   * The activation after one hook returned `out`: `act` itself when it returned nothing or edited
   * in place, else its checked replacement; a returned Promise is a HookError.
   */
  #hookResult(name: string, act: Tensor, out: unknown, n: number): Tensor {
    const what = this.#backward ? "backward hook" : "hook";
    if (out instanceof Promise || (typeof out === "object" && out !== null && "then" in out)) {
      throw new HookError(
        `the ${what} on "${name}" returned a Promise: hooks must be synchronous (no async ` +
          `function, no await); compute what the hook needs before the run`,
      );
    }
    if (out !== undefined && out !== null && out !== act) {
      act = checkReplacement(`${what} on "${name}"`, act, out);
    }
    checkData(`${what} on "${name}"`, act, n);
    return act;
  }

  /** A nested point's visit: its hooks over `act`, the cache, the value after the hooks. */
  #visitNested(name: string, act: Tensor): Tensor {
    const fns = this.hooks.get(name);
    if (fns) {
      const ctx: HookContext = { name, layer: null, nested: this.#nested };
      const n = act.data.length;
      for (const fn of fns) act = this.#hookResult(name, act, fn(act, ctx) as unknown, n);
    }
    if (this.cacheNames.has(name)) {
      this.cached.set(name, this.#cacheAs ? this.#cacheAs(name, act) : act);
    }
    return act;
  }
}

/** The hook functions a session awaits (see {@linkcode awaitedHook}). */
const AWAITED_HOOKS = new WeakSet<object>();

/**
 * Marks an asynchronous hook function as one the session awaits at a model hook point: for the
 * library's own splices (an SAE spliced with `model.addSae` runs kernels and reads their results
 * inside the hook). Hooks registered by users stay synchronous ({@linkcode checkHookFn}); an
 * awaited hook does not run at nested hook points.
 *
 * @example
 * ```ts
 * import { awaitedHook } from "./hooks.ts";
 * const splice = awaitedHook(async (act) => {
 *   await Promise.resolve(); // e.g. a backend read
 *   return act;
 * });
 * typeof splice; // "function"
 * ```
 */
export function awaitedHook(
  fn: (activation: Tensor, hook: HookContext) => Promise<Tensor | void>,
): HookFn {
  AWAITED_HOOKS.add(fn);
  return fn as unknown as HookFn;
}

/**
 * Throws a {@link HookError} unless `fn` is a plain synchronous function (an `async` function
 * is refused when it is registered, before any run).
 *
 * @example
 * ```ts
 * import { checkHookFn } from "./hooks.ts";
 * checkHookFn(() => {}, "blocks.0.hook_z"); // fine
 * ```
 */
export function checkHookFn(fn: unknown, where: string): asserts fn is HookFn {
  if (typeof fn !== "function") {
    throw new HookError(`the hook on ${where} is not a function (got ${typeof fn})`);
  }
  if (
    fn.constructor?.name === "AsyncFunction" || fn.constructor?.name === "AsyncGeneratorFunction"
  ) {
    throw new HookError(
      `the hook on ${where} is an async function: hooks must be synchronous (no async ` +
        `function, no await); compute what the hook needs before the run`,
    );
  }
}

/** 1 where `after` differs from `before` bit for bit, or undefined when nothing changed. */
function changedMask(before: Float32Array, after: Float32Array): Uint8Array | undefined {
  let mask: Uint8Array | undefined;
  for (let i = 0; i < after.length; i++) {
    if (!Object.is(after[i], before[i])) (mask ??= new Uint8Array(after.length))[i] = 1;
  }
  return mask;
}

/** `where` says which hook, e.g. `hook on "blocks.0.hook_mlp_out"`. */
function checkReplacement(where: string, before: Tensor, out: unknown): Tensor {
  const t = out as Tensor;
  if (typeof out !== "object" || !(t.data instanceof Float32Array) || !Array.isArray(t.shape)) {
    throw new HookError(
      `the ${where} returned something that is not a Tensor { data: Float32Array, shape }`,
    );
  }
  const same = t.shape.length === before.shape.length &&
    t.shape.every((d, i) => d === before.shape[i]);
  if (!same) {
    throw new HookError(
      `the ${where} returned shape [${t.shape}] but the value it replaces has shape ` +
        `[${before.shape}]: a replacement must keep the shape`,
    );
  }
  return t;
}

/** The activation's data must still hold exactly its shape's values (a hook may swap it). */
function checkData(where: string, act: Tensor, expected: number): void {
  if (!(act.data instanceof Float32Array) || act.data.length !== expected) {
    const got = act.data instanceof Float32Array
      ? `${act.data.length} values`
      : `a ${Object.prototype.toString.call(act.data)}`;
    throw new HookError(
      `after the ${where} the value holds ${got}, but its shape ` +
        `[${act.shape}] needs a Float32Array of ${expected}: keep the data's length when ` +
        `editing in place, or return a new Tensor of the same shape`,
    );
  }
}
