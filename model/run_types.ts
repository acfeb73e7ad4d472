/**
 * The result types of a model call, computed from its options, so that
 * `await model.run(tokens, { returnType: "loss" })` is typed `number` and
 * `{ returnType: "both", lossPerToken: true }` gives `{ logits: Tensor; loss: Tensor }`.
 * Options typed only as {@linkcode RunOptions} give the union of what they may return.
 * @module
 */
import type { Tensor } from "../core/tensor.ts";
import type { ActivationCache } from "./activation_cache.ts";
import type { ReturnType } from "./run.ts";

/**
 * Option `K` of options type `O`: its value type, or `D` where it may be absent.
 *
 * @example
 * ```ts
 * import type { OptionValue } from "./run_types.ts";
 * const r: OptionValue<{ returnType: "loss" }, "returnType", "logits"> = "loss";
 * ```
 */
export type OptionValue<O, K extends PropertyKey, D> = K extends keyof O
  ? Exclude<O[K], undefined> | (undefined extends O[K] ? D : never)
  : D;

/** The `returnType` options `O` ask for (`"logits"` when absent). */
export type ReturnTypeOf<O> = Extract<OptionValue<O, "returnType", "logits">, ReturnType>;

/** The loss's type: a number, or a [batch, pos - 1] Tensor with `lossPerToken: true`. */
export type LossOf<O> = OptionValue<O, "lossPerToken", false> extends true ? Tensor
  : true extends OptionValue<O, "lossPerToken", false> ? number | Tensor
  : number;

/** What return type `R` gives (for each member of a union). */
export type OutputOf<R, O> = R extends "none" ? null
  : R extends "loss" ? LossOf<O>
  : R extends "both" ? { logits: Tensor; loss: LossOf<O> }
  : Tensor;

/** Whether options `O` stop early (`stopAtLayer`): `true`, `false`, or `boolean` when they may. */
export type StopsOf<O> = [OptionValue<O, "stopAtLayer", undefined>] extends [undefined] ? false
  : [OptionValue<O, "stopAtLayer", undefined>] extends [number] ? true
  : boolean;

/**
 * What `run` and `runWithHooks` return for options `O`: logits [batch, pos, d_vocab], the loss
 * (a number, or a Tensor with `lossPerToken`), `{ logits, loss }`, null for `"none"`, or the
 * residual stream [batch, pos, d_model] with `stopAtLayer`.
 */
export type RunResult<O> = StopsOf<O> extends true ? Tensor
  : StopsOf<O> extends false ? OutputOf<ReturnTypeOf<O>, O>
  : Tensor | OutputOf<ReturnTypeOf<O>, O>;

/** `runWithCache`'s logits for return type `R`: a Tensor for "logits" and "both", else null. */
export type CacheLogitsOf<R> = R extends "logits" | "both" ? Tensor : null;

/** `runWithCache`'s loss for return type `R`: the loss for "loss" and "both", else undefined. */
export type CacheLossOf<R, O> = R extends "loss" | "both" ? LossOf<O> : undefined;

/** What `runWithCache` returns for options `O`: what was asked for, and the cache. */
export interface RunWithCacheResult<O> {
  /** Logits [batch, pos, d_vocab] (`returnType` `"logits"` or `"both"`), else null. */
  logits: StopsOf<O> extends true ? null : CacheLogitsOf<ReturnTypeOf<O>>;
  /** The loss (`returnType` `"loss"` or `"both"`), else undefined. */
  loss: StopsOf<O> extends true ? undefined : CacheLossOf<ReturnTypeOf<O>, O>;
  /** With `stopAtLayer`: the residual stream entering that block [batch, pos, d_model]. */
  residual: StopsOf<O> extends true ? Tensor
    : StopsOf<O> extends false ? undefined
    : Tensor | undefined;
  /** The activations, by hook name (with `inclBwdCache`, their gradients under `<name>_grad`). */
  cache: ActivationCache;
  /** With `inclBwdCache`: the value of what the backward pass differentiated (the metric). */
  value?: number;
}
