/**
 * One model call as TransformerLens's `forward` takes it: tokens, text (tokenized and padded) or
 * a residual stream (`startAtLayer`), an attention mask, where to start and stop, and what to
 * return (`returnType`: logits, loss, both or nothing). This file turns those options into a
 * {@linkcode ForwardPlan} and the pass's output into the result.
 * @module
 */
import { InputError } from "../core/errors.ts";
import { deferredTensor, type Tensor, tensor } from "../core/tensor.ts";
import { forward, type ForwardPlan, type ModelRuntime } from "./forward.ts";
import type { HookSession } from "./hooks.ts";
import { NextTokenLoss } from "./loss.ts";
import {
  type AttentionMask,
  isUnpadded,
  type Padding,
  paddingFromMask,
  type PaddingSide,
} from "./padding.ts";
import { encodeBatch, getAttentionMask, type TextModel } from "./text.ts";
import { type Tokens, type TokenTensor, toTokenTensor } from "./tokens.ts";

/**
 * What a run returns (TransformerLens's `return_type`): logits [batch, pos, d_vocab], the loss,
 * both (`{ logits, loss }`), or nothing (`"none"`: no unembedding at all).
 */
export type ReturnType = "logits" | "loss" | "both" | "none";

const RETURN_TYPES: readonly ReturnType[] = ["logits", "loss", "both", "none"];

/** What a model call accepts: token ids, text (one string or a batch), or a residual stream. */
export type ModelInput = Tokens | string | string[] | Tensor;

/** Options of every model call (`run`, `runWithCache`, `runWithHooks`). */
export interface RunOptions {
  /** `"logits"` (default), `"loss"`, `"both"` or `"none"`. */
  returnType?: ReturnType;
  /**
   * With a loss: -log p(next token) per position, [batch, pos - 1] (0 at positions the mask
   * excludes), instead of their mean.
   */
  lossPerToken?: boolean;
  /**
   * Stop before this block and return the residual stream entering it, [batch, pos, d_model]
   * (negative counts from the end; `nLayers` returns the last block's output, before the final
   * norm).
   */
  stopAtLayer?: number;
  /**
   * Start at this block: the input is then the residual stream entering it, a Tensor
   * [batch, pos, d_model] (negative counts from the end).
   */
  startAtLayer?: number;
  /**
   * [batch, pos] of 0 (padding) and 1 (real token), for batches padded on the left or right: real
   * tokens never attend to pads, positions count from each sequence's first real token, and the
   * loss skips pads. Text input is masked automatically.
   */
  attentionMask?: AttentionMask;
  /**
   * Which side holds the pad tokens (default `"right"`). Text input is padded on this side; token
   * ids given with it are masked where their pad tokens are (TL's `get_attention_mask`: leading
   * pads with `"left"`, trailing pads with `"right"`; the model's pad token is EOS, else BOS).
   */
  paddingSide?: PaddingSide;
  /** Text input: put the BOS token first (default: the model's `defaultPrependBos`). */
  prependBos?: boolean;
  /** With `startAtLayer` and a loss: the tokens the loss predicts. */
  tokens?: Tokens;
}

/**
 * The option names of {@link RunOptions} (for run-time checking).
 *
 * @example
 * ```ts
 * import { RUN_OPTION_KEYS } from "./run.ts";
 * RUN_OPTION_KEYS.includes("returnType"); // true
 * ```
 */
export const RUN_OPTION_KEYS: readonly string[] = [
  "returnType",
  "lossPerToken",
  "stopAtLayer",
  "startAtLayer",
  "attentionMask",
  "paddingSide",
  "prependBos",
  "tokens",
];

/** A call's input and options, checked and resolved: what the pass needs. */
export interface PreparedRun {
  batch: number;
  T: number;
  /** The tokens, when the pass embeds them or the loss needs them. */
  tokens?: TokenTensor;
  /** The starting residual stream (with `startAtLayer`). */
  residual?: Tensor;
  padding?: Padding;
  startLayer: number;
  stopAtLayer?: number;
  returnType: ReturnType;
  lossPerToken: boolean;
}

/** The raw output of a call; the model shapes it for each method. */
export interface RunOutput {
  /** Logits [batch, pos, d_vocab] when asked, else null. */
  logits: Tensor | null;
  /** The mean loss, or [batch, pos - 1] with `lossPerToken`, when asked. */
  loss?: number | Tensor;
  /** The residual stream entering `stopAtLayer`, when given. */
  residual?: Tensor;
}

/** A layer index in [-nLayers, nLayers], negative counting from the end. */
function layerIndex(value: unknown, nLayers: number, name: string): number {
  if (!Number.isInteger(value) || Math.abs(value as number) > nLayers) {
    throw new InputError(
      `${name} must be an integer in [-${nLayers}, ${nLayers}], got ${JSON.stringify(value)}`,
    );
  }
  const l = value as number;
  return l < 0 ? l + nLayers : l;
}

function isText(input: unknown): input is string | string[] {
  return typeof input === "string" ||
    (Array.isArray(input) && input.length > 0 && typeof input[0] === "string");
}

function isResidual(input: unknown): input is Tensor {
  return typeof input === "object" && input !== null && !Array.isArray(input) &&
    (input as Tensor).data instanceof Float32Array;
}

/**
 * Checks a call's input and options and resolves them (text is tokenized and padded here).
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { prepareRun } from "./run.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const p = prepareRun(model, [[2047, 5, 9], [0, 2047, 5]], { attentionMask: [[1, 1, 1], [0, 1, 1]] });
 * p.padding?.first; // Int32Array [0, 1]
 * ```
 */
export function prepareRun(model: TextModel, input: ModelInput, opts: RunOptions): PreparedRun {
  const { cfg } = model;
  const returnType = opts.returnType ?? "logits";
  if (!RETURN_TYPES.includes(returnType)) {
    throw new InputError(
      `returnType must be one of ${RETURN_TYPES.map((r) => `"${r}"`).join(", ")}, got ${
        JSON.stringify(returnType)
      }`,
    );
  }
  if (opts.lossPerToken !== undefined && typeof opts.lossPerToken !== "boolean") {
    throw new InputError(`lossPerToken must be true or false, got ${opts.lossPerToken}`);
  }
  const wantsLoss = returnType === "loss" || returnType === "both";
  const startLayer = opts.startAtLayer === undefined
    ? 0
    : layerIndex(opts.startAtLayer, cfg.nLayers, "startAtLayer");
  const stopAtLayer = opts.stopAtLayer === undefined
    ? undefined
    : layerIndex(opts.stopAtLayer, cfg.nLayers, "stopAtLayer");
  if (stopAtLayer !== undefined && stopAtLayer < startLayer) {
    throw new InputError(`stopAtLayer ${stopAtLayer} is before startAtLayer ${startLayer}`);
  }
  if (stopAtLayer !== undefined && wantsLoss) {
    throw new InputError(
      `stopAtLayer returns the residual stream entering block ${stopAtLayer}: there are no ` +
        `logits to take a loss of (drop returnType "${returnType}")`,
    );
  }

  let tokens: TokenTensor | undefined;
  let residual: Tensor | undefined;
  let padding: Padding | undefined;
  if (opts.tokens !== undefined && opts.startAtLayer === undefined) {
    throw new InputError("the tokens option is for startAtLayer runs; pass tokens as the input");
  }
  if (opts.startAtLayer !== undefined) {
    if (!isResidual(input)) {
      throw new InputError(
        "with startAtLayer the input is the residual stream entering that block: a Tensor " +
          `{ data: Float32Array, shape: [batch, pos, ${cfg.dModel}] }`,
      );
    }
    const [b, t, d] = input.shape;
    if (
      input.shape.length !== 3 || d !== cfg.dModel || input.data.length !== b * t * d || !b || !t
    ) {
      throw new InputError(
        `the residual stream must have shape [batch, pos, ${cfg.dModel}] with matching data, ` +
          `got shape [${input.shape}] with ${input.data.length} values`,
      );
    }
    if (t > cfg.nCtx) {
      throw new InputError(`${t} positions are more than the model's context n_ctx = ${cfg.nCtx}`);
    }
    residual = input;
    if (opts.tokens !== undefined) tokens = toTokenTensor(opts.tokens, cfg);
    if (wantsLoss && !tokens) {
      throw new InputError(
        `returnType "${returnType}" with startAtLayer needs the tokens the loss predicts: ` +
          `pass them as the tokens option`,
      );
    }
    if (tokens && (tokens.shape[0] !== b || tokens.shape[1] !== t)) {
      throw new InputError(
        `tokens have shape [${tokens.shape}] but the residual [${b}, ${t}, ...]`,
      );
    }
  } else if (isResidual(input)) {
    throw new InputError(
      "a Float32Array input is a residual stream: say which block it enters with startAtLayer",
    );
  } else if (isText(input)) {
    const text = encodeBatch(model, input, {
      prependBos: opts.prependBos,
      paddingSide: opts.paddingSide,
    });
    tokens = toTokenTensor(text.tokens, cfg);
    padding = text.padding;
  } else {
    tokens = toTokenTensor(input, cfg);
  }
  const [batch, T] = residual ? residual.shape : tokens!.shape;
  if (opts.attentionMask !== undefined) padding = paddingFromMask(opts.attentionMask, batch, T);
  else if (tokens && opts.paddingSide !== undefined && !isText(input)) {
    // Token ids said to be padded: the mask comes from their pad tokens, as TL's
    // utils.get_attention_mask (an InputError where the model has no pad token).
    const mask = getAttentionMask(
      model,
      tokens,
      opts.prependBos ?? cfg.defaultPrependBos,
      opts.paddingSide,
    );
    padding = paddingFromMask(mask, batch, T);
  } else if (opts.paddingSide !== undefined && !tokens) {
    throw new InputError(
      "paddingSide on a residual-stream input cannot find the padding (there are no tokens): " +
        "pass attentionMask, or the tokens option",
    );
  }
  if (padding && isUnpadded(padding, T)) padding = undefined;
  return {
    batch,
    T,
    tokens,
    residual,
    padding,
    startLayer,
    stopAtLayer,
    returnType,
    lossPerToken: opts.lossPerToken ?? false,
  };
}

/**
 * Activations without their batch axis (TL's `remove_batch_dim`), for a batch of 1.
 *
 * @example
 * ```ts
 * import { withoutBatchDim } from "./run.ts";
 * const acts = new Map([["hook_embed", { data: new Float32Array(6), shape: [1, 2, 3] }]]);
 * withoutBatchDim(acts, 1).get("hook_embed")?.shape; // [2, 3]
 * ```
 */
export function withoutBatchDim(acts: Map<string, Tensor>, batch: number): Map<string, Tensor> {
  if (batch !== 1) throw new InputError(`removeBatchDim needs a batch of 1, got ${batch}`);
  // Deferred, so that an activation still in the backend is read only when it is wanted.
  return new Map([...acts].map(([k, t]) => [k, deferredTensor(t.shape.slice(1), () => t.data)]));
}

/**
 * Runs a prepared call: one forward pass, unembedding only what the return type needs (with the
 * loss alone, only the positions that have a next token).
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { hookSessionOf, runtimeOf } from "./hooked_transformer.ts";
 * import { executeRun, prepareRun } from "./run.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const p = prepareRun(model, [[2047, 5, 9, 5, 9]], { returnType: "loss" });
 * (await executeRun(runtimeOf(model), hookSessionOf(model), p)).loss; // the mean next-token loss
 * ```
 */
export async function executeRun(
  m: ModelRuntime,
  session: HookSession,
  p: PreparedRun,
): Promise<RunOutput> {
  const { backend, cfg } = m;
  const { batch, T, returnType } = p;
  const V = cfg.dVocab;
  const plan: ForwardPlan = {
    batch,
    T,
    padding: p.padding,
    startLayer: p.startLayer,
    stopAtLayer: p.stopAtLayer,
  };
  if (p.residual) {
    const data = p.residual.data;
    plan.input = (resid) => backend.write(resid, data);
  } else {
    plan.tokens = p.tokens;
  }
  const wantsLogits = returnType === "logits" || returnType === "both";
  const loss = (returnType === "loss" || returnType === "both") && p.stopAtLayer === undefined
    ? new NextTokenLoss(p.tokens!.data, batch, T, p.padding)
    : undefined;
  const logits = wantsLogits && p.stopAtLayer === undefined
    ? new Float32Array(batch * T * V)
    : null;
  if (logits) {
    const reduce = loss?.reducer(backend, V, Int32Array.from({ length: batch * T }, (_, i) => i));
    plan.unembed = {
      each: async (r0, count, chunk) => {
        // Both reads of the chunk are issued before the first await.
        await Promise.all([backend.readInto(chunk, logits, r0 * V), reduce?.(r0, count, chunk)]);
      },
    };
  } else if (loss) {
    plan.unembed = { rows: loss.rows, each: loss.reducer(backend, V) };
  }
  const { resid } = await forward(m, plan, session);
  return {
    logits: logits && tensor(logits, [batch, T, V]),
    loss: loss && (p.lossPerToken ? loss.perToken() : loss.mean()),
    residual: resid,
  };
}
