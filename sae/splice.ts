/**
 * Splicing SAEs into a model with the hook machinery (SAELens's `HookedSAETransformer`): an SAE
 * becomes a forward hook at its `hook_name` that replaces the activation with the SAE's output
 * (a transcoder: reads `hook_name`, replaces `hook_name_out`), visiting the SAE's own hook points
 * as nested points `<hook_name>.hook_sae_acts_post`, ... so that hooks and caches reach them.
 * With the error term on, the output is the reconstruction plus the error (the original activation
 * minus the reconstruction computed with the SAE's hooks off), so the model's values are the clean
 * ones unless a hook changes a feature.
 * @module
 */
import type { Backend } from "../backend/backend.ts";
import { HookError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import type { HookedTransformerConfig } from "../model/config.ts";
import { assertHookName } from "../model/hook_table.ts";
import {
  awaitedHook,
  type HookContext,
  type HookFn,
  type NestedHookPoints,
} from "../model/hooks.ts";
import { SAE_HOOK_POINTS, type SAEModule } from "./sae.ts";

/** Options of `model.addSae`. */
export interface AddSaeOptions {
  /**
   * Add the SAE's error back, so the model's output is the clean one and gradients reach the
   * features through the decoder only (SAELens's `use_error_term`; default false).
   */
  useErrorTerm?: boolean;
}

/** Hook points that decide the reconstruction: a hook on one makes the error term recompute. */
const BEFORE_ERROR = [
  "hook_sae_input",
  "hook_sae_acts_pre",
  "hook_sae_acts_post",
  "hook_sae_recons",
];

/** One SAE spliced into a model. */
export class SaeSplice {
  /** The output of the input hook's computation, for a transcoder's output hook (one pass). */
  #pending: { out?: Float32Array; rows: number; modified: boolean; x: Float32Array } | null = null;

  /**
   * @param sae The SAE.
   * @param useErrorTerm Add the error term.
   * @param backend The model's backend (the SAE's weights are uploaded there now).
   */
  constructor(
    readonly sae: SAEModule,
    readonly useErrorTerm: boolean,
    readonly backend: Backend,
  ) {
    sae.prepare(backend);
  }

  /** The hook point the SAE reads (and names its own points after). */
  get hookName(): string {
    return this.sae.cfg.hookName;
  }

  /** The hook point the SAE's output replaces. */
  get hookNameOut(): string {
    return this.sae.cfg.hookNameOut ?? this.sae.cfg.hookName;
  }

  /** The SAE's hook points' full names (`<hook_name>.hook_sae_input`, ...). */
  nestedNames(): string[] {
    return SAE_HOOK_POINTS.map((p) => `${this.hookName}.${p}`);
  }

  /**
   * The forward hooks that splice the SAE: `[name, fn]`, input point first. They run the SAE's
   * kernels and read their results, so the session awaits them (`awaitedHook`).
   */
  hooks(): [string, HookFn][] {
    if (!this.sae.isTranscoder) {
      return [[this.hookName, awaitedHook((act, ctx) => this.#splice(act, ctx))]];
    }
    return [
      [this.hookName, awaitedHook((act, ctx) => this.#readInput(act, ctx))],
      [this.hookNameOut, awaitedHook((act, ctx) => this.#writeOutput(act, ctx))],
    ];
  }

  /** Whether a hook on one of the points before the error may change the reconstruction. */
  #modified(points: NestedHookPoints | undefined): boolean {
    return !!points && BEFORE_ERROR.some((p) => points.hooked(`${this.hookName}.${p}`));
  }

  /** The SAE over the activation `x` of shape `shape` (hook_z: [..., n_heads, d_head]). */
  async #compute(x: Float32Array, shape: number[], ctx: HookContext) {
    const { dIn } = this.sae.cfg;
    // the model dims must be the SAE's d_in (not only divide the activation: an SAE of another
    // model whose d_in divides this one's width would read the rows wrongly)
    const width = this.sae.cfg.reshapeActivations === "hook_z"
      ? shape.at(-1)! * shape.at(-2)!
      : shape.at(-1);
    if (width !== dIn || x.length % dIn !== 0) {
      throw new HookError(
        `the SAE at ${this.hookName} reads ${dIn} values per position, but the activation has ` +
          `shape [${shape}]: it was trained on another model (or hook point)`,
      );
    }
    const rows = x.length / dIn;
    const lead = this.sae.cfg.reshapeActivations === "hook_z"
      ? shape.slice(0, -2)
      : shape.slice(0, -1);
    const nested = ctx.nested
      ? { points: ctx.nested, prefix: this.hookName, shape: lead }
      : undefined;
    const modified = this.#modified(ctx.nested);
    // With the error term, nothing changing the features and nobody reading the decoder's side,
    // the output is the activation itself: the decoder need not run.
    const points = ctx.nested;
    const reads = ["hook_sae_recons", "hook_sae_error", "hook_sae_output"].some((p) =>
      points?.wants(`${this.hookName}.${p}`)
    );
    const needOut = !this.useErrorTerm || modified || reads;
    const out = (await this.sae.run(this.backend, x, rows, { out: needOut, nested })).out;
    return { out, rows, modified };
  }

  /** A standard SAE: the activation becomes the output (plus the error). */
  async #splice(act: Tensor, ctx: HookContext): Promise<Tensor> {
    const r = await this.#compute(act.data, act.shape, ctx);
    return await this.#finish(act, r.out, r.rows, r.modified, act.data, ctx);
  }

  /** A transcoder's input point: computes, leaves the activation as it is. */
  async #readInput(act: Tensor, ctx: HookContext): Promise<void> {
    const r = await this.#compute(act.data, act.shape, ctx);
    this.#pending = { ...r, x: act.data };
  }

  /** A transcoder's output point: the activation becomes the output (plus the error). */
  async #writeOutput(act: Tensor, ctx: HookContext): Promise<Tensor> {
    const p = this.#pending;
    this.#pending = null;
    if (act.shape.at(-1) !== this.sae.cfg.dOut) {
      throw new HookError(
        `the transcoder writes ${this.sae.cfg.dOut} values per position at ${this.hookNameOut}, ` +
          `but the activation there has shape [${act.shape}]`,
      );
    }
    if (
      !p || (p.out && p.out.length !== act.data.length) ||
      p.rows * this.sae.cfg.dOut !== act.data.length
    ) {
      throw new HookError(
        `the transcoder's output point ${this.hookNameOut} ran without its input point ` +
          `${this.hookName} in the same pass (a pass that starts between them cannot splice it)`,
      );
    }
    return await this.#finish(act, p.out, p.rows, p.modified, p.x, ctx);
  }

  /**
   * The output in the activation's shape: the reconstruction, or with the error term the
   * reconstruction plus (activation - the reconstruction without the SAE's hooks); the error and
   * the output are visited as `hook_sae_error` and `hook_sae_output`.
   */
  async #finish(
    act: Tensor,
    out: Float32Array | undefined,
    rows: number,
    modified: boolean,
    input: Float32Array,
    ctx: HookContext,
  ): Promise<Tensor> {
    const points = ctx.nested;
    const name = (p: string) => `${this.hookName}.${p}`;
    if (!out) return act; // the error term alone, nobody reading: the activation unchanged
    let result: Float32Array;
    if (this.useErrorTerm) {
      // the clean reconstruction: the one just computed unless a hook may have changed it
      const clean = modified
        ? (await this.sae.run(this.backend, input, rows, { out: true })).out!
        : out;
      let error: Float32Array = new Float32Array(act.data.length);
      for (let i = 0; i < error.length; i++) error[i] = act.data[i] - clean[i];
      if (points?.wants(name("hook_sae_error"))) {
        error = points.visit(name("hook_sae_error"), { data: error, shape: [...act.shape] }).data;
      }
      const exact = !modified && !points?.hooked(name("hook_sae_error"));
      // unchanged: out + (act - out) is act itself, kept exact rather than rounded twice
      result = exact ? act.data.slice() : out.map((v, i) => v + error[i]);
    } else result = out;
    if (points?.wants(name("hook_sae_output"))) {
      result = points.visit(name("hook_sae_output"), { data: result, shape: [...act.shape] }).data;
    }
    return { data: result, shape: [...act.shape] };
  }
}

/**
 * The hooks of a model's spliced SAEs merged before `hooks` (the model's registered and a call's
 * own): an SAE replaces the activation first, and the hooks on that point then see its output.
 */
export function withSaeHooks(
  splices: readonly SaeSplice[],
  hooks: Map<string, HookFn[]>,
): Map<string, HookFn[]> {
  if (splices.length === 0) return hooks;
  const merged = new Map<string, HookFn[]>();
  for (const s of splices) {
    for (const [name, fn] of s.hooks()) merged.set(name, [...(merged.get(name) ?? []), fn]);
  }
  for (const [name, fns] of hooks) merged.set(name, [...(merged.get(name) ?? []), ...fns]);
  return merged;
}

/** The model's hook names with each SAE's nested points after the point it reads. */
export function withSaeNames(names: readonly string[], splices: readonly SaeSplice[]): string[] {
  if (splices.length === 0) return [...names];
  const out: string[] = [];
  for (const n of names) {
    out.push(n);
    for (const s of splices) if (s.hookName === n) out.push(...s.nestedNames());
  }
  return out;
}

/**
 * Checks that `sae` can be spliced into a model whose hook points are `names`: its hook points
 * exist (an optional one must be on). Returns it; throws a {@link HookError} otherwise.
 */
export function checkSaeFits(
  sae: SAEModule,
  names: readonly string[],
  cfg: HookedTransformerConfig,
): SAEModule {
  if (!sae || typeof sae !== "object" || typeof sae.run !== "function" || !sae.cfg) {
    throw new HookError("addSae: expected an SAE (SAE.loadFromDisk, SAE.fromPretrained)");
  }
  const known = new Set(names);
  for (const name of [sae.cfg.hookName, sae.cfg.hookNameOut]) {
    if (name !== undefined) assertHookName(name, known, cfg);
  }
  return sae;
}
