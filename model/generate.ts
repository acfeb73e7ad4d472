/**
 * Text generation as TransformerLens's `generate`: sample one token at a time (greedy at
 * temperature 0, else from the softmax with optional top-k or top-p filtering), stopping at EOS.
 * With the key/value cache (the default) each new token costs one position: the prompt's pass
 * writes every layer's keys and values into the cache, and each later pass computes only the new
 * position, reading earlier keys and values from it (the forward pass's resumed runs). The model's
 * registered hooks run in every pass, so steering with a hook works while generating; with the
 * cache, a pass after the first shows hooks only the new position ([batch, 1, ...]), as in TL.
 * A prompt may also be token embeddings [batch, pos, d_model] (TL's `input_type="embeds"`): they
 * take the place of W_E[tokens], position embeddings are added as for tokens, each new token is
 * embedded with W_E, and the result holds the new tokens only.
 * @module
 */
import { InputError, NumericError } from "../core/errors.ts";
import { checkOptions } from "../core/options.ts";
import { SeededRng } from "../core/rng.ts";
import type { Tensor } from "../core/tensor.ts";
import type { DeviceArray } from "../backend/backend.ts";
import { forward, type ForwardPlan, type KvCache, type ModelRuntime } from "./forward.ts";
import type { HookSession } from "./hooks.ts";
import { type AttentionMask, type Padding, paddingFromMask } from "./padding.ts";
import { encodeBatch, needTokenizer, type TextModel } from "./text.ts";
import { type Tokens, toTokenTensor } from "./tokens.ts";

/** Options of `model.generate`. */
export interface GenerateOptions {
  /** Tokens to add to each sequence (default 10). */
  maxNewTokens?: number;
  /** Divides the logits before sampling (default 1); 0 is greedy (always the argmax). */
  temperature?: number;
  /** Sample only among the k most likely tokens (ties at the k-th logit are kept, as TL). */
  topK?: number;
  /** Sample only among the most likely tokens whose probabilities sum to top-p, in (0, 1]. */
  topP?: number;
  /** `false` is greedy whatever the temperature (TL's `do_sample`; default true). */
  doSample?: boolean;
  /** Seed of the sampler, so a generation can be repeated (default: a random seed). */
  seed?: number;
  /**
   * Stop a sequence once it produced EOS, and the generation once all have (default true when
   * the model has an EOS token); finished sequences are padded with EOS.
   */
  stopAtEos?: boolean;
  /** The token that ends a sequence (default: the model's EOS). */
  eosTokenId?: number;
  /** Reuse earlier positions' keys and values (default true); false recomputes the whole prefix. */
  usePastKvCache?: boolean;
  /**
   * `"tokens"`: each sequence's ids, prompt first; `"str"`: decoded text without special tokens;
   * `"input"` (default): text for text input, tokens for tokens.
   */
  returnType?: "input" | "tokens" | "str";
  /** Text input: put the BOS token first (default: the model's `defaultPrependBos`). */
  prependBos?: boolean;
  /** Token input padded on the left: [batch, pos] of 0 (pad) and 1 (real token). */
  attentionMask?: AttentionMask;
}

const GENERATE_KEYS = [
  "maxNewTokens",
  "temperature",
  "topK",
  "topP",
  "doSample",
  "seed",
  "stopAtEos",
  "eosTokenId",
  "usePastKvCache",
  "returnType",
  "prependBos",
  "attentionMask",
];

/** What generation runs on: the model's runtime, its hooks, and its tokenizer. */
export interface GenerateContext {
  runtime: ModelRuntime;
  session: HookSession;
  text: TextModel;
}

/** What `generate` returns: token rows, or text (one string for one text, else one per row). */
export type GenerateResult = number[][] | string | string[];

function positiveInt(v: unknown, name: string): number {
  if (!Number.isInteger(v) || (v as number) < 1) {
    throw new InputError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v as number;
}

/**
 * Generates up to `maxNewTokens` tokens after each input sequence. Text lists are padded on the
 * left so every sequence's last real token is at the end (as TL forces for batched generation).
 * `model.generate` calls this with the model's runtime and hooks.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { hookSessionOf, runtimeOf } from "./hooked_transformer.ts";
 * import { generate } from "./generate.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const ctx = { runtime: runtimeOf(model), session: hookSessionOf(model), text: model };
 * await generate(ctx, [[2047, 5, 9, 5]], { maxNewTokens: 2, temperature: 0 }); // [[2047, 5, 9, 5, ...]]
 * ```
 */
export async function generate(
  ctx: GenerateContext,
  input: string | string[] | Tokens | Tensor,
  opts: GenerateOptions = {},
): Promise<GenerateResult> {
  checkOptions(opts, GENERATE_KEYS, "generate");
  const { runtime: m, text } = ctx;
  const { cfg, backend } = m;
  const maxNew = positiveInt(opts.maxNewTokens ?? 10, "maxNewTokens");
  const temperature = opts.temperature ?? 1;
  if (typeof temperature !== "number" || !(temperature >= 0) || !Number.isFinite(temperature)) {
    throw new InputError(`temperature must be a finite number >= 0, got ${temperature}`);
  }
  const topK = opts.topK === undefined ? undefined : positiveInt(opts.topK, "topK");
  const topP = opts.topP;
  if (topP !== undefined && !(typeof topP === "number" && topP > 0 && topP <= 1)) {
    throw new InputError(`topP must be a number in (0, 1], got ${JSON.stringify(topP)}`);
  }
  if (topK !== undefined && topP !== undefined) {
    throw new InputError("topK and topP are mutually exclusive: give one of them");
  }
  const greedy = opts.doSample === false || temperature === 0;
  const returnType = opts.returnType ?? "input";
  if (!["input", "tokens", "str"].includes(returnType)) {
    throw new InputError(`returnType must be "input", "tokens" or "str", got ${returnType}`);
  }
  const eos = opts.eosTokenId ?? cfg.eosTokenId;
  if (opts.stopAtEos === true && eos === null) {
    throw new InputError(`${cfg.modelName} has no EOS token: pass eosTokenId, or stopAtEos: false`);
  }
  const stopAtEos = (opts.stopAtEos ?? true) && eos !== null;
  if (eos !== null && (!Number.isInteger(eos) || eos < 0 || eos >= cfg.dVocab)) {
    throw new InputError(`eosTokenId ${eos} is outside the vocabulary [0, ${cfg.dVocab})`);
  }

  // The prompt, [B, T0], and where each sequence's real tokens start.
  const isText = typeof input === "string" ||
    (Array.isArray(input) && typeof input[0] === "string");
  const embeds = embedsOf(input, cfg.dModel);
  let rows: number[][];
  let padding: Padding | undefined;
  if (embeds) {
    if (opts.attentionMask !== undefined || opts.prependBos !== undefined) {
      throw new InputError(
        "generate from embeddings takes no attentionMask or prependBos: the embeddings are the " +
          "whole prompt, every position real",
      );
    }
    const [b, T] = embeds.shape;
    rows = Array.from({ length: b }, () => new Array<number>(T).fill(0));
  } else if (isText) {
    const enc = encodeBatch(text, input as string | string[], {
      prependBos: opts.prependBos,
      paddingSide: "left",
    });
    rows = enc.tokens;
    padding = enc.padding;
  } else {
    const t = toTokenTensor(input as Tokens, cfg);
    const [b, T] = t.shape;
    rows = Array.from({ length: b }, (_, i) => Array.from(t.data.subarray(i * T, i * T + T)));
  }
  const B = rows.length, T0 = rows[0].length;
  if (opts.attentionMask !== undefined) {
    if (isText) throw new InputError("text input is masked automatically: drop attentionMask");
    padding = paddingFromMask(opts.attentionMask, B, T0);
    if (padding.holes) {
      throw new InputError(
        "generate takes prompts padded on the left only: this attentionMask has a 0 between " +
          "real tokens (drop those tokens from the prompt instead; a run supports such masks)",
      );
    }
  }
  if (padding && padding.end.some((e) => e !== T0)) {
    throw new InputError("generate needs prompts padded on the left (the last token real)");
  }
  const total = T0 + maxNew;
  if (total > cfg.nCtx) {
    throw new InputError(
      `${T0} prompt tokens + ${maxNew} new ones exceed the model's context n_ctx = ${cfg.nCtx}`,
    );
  }

  const seqs = new Int32Array(B * total);
  rows.forEach((r, b) => seqs.set(r, b * total));
  if (opts.seed !== undefined && !Number.isFinite(opts.seed)) {
    throw new InputError(`seed must be a finite number, got ${JSON.stringify(opts.seed)}`);
  }
  const rng = new SeededRng(opts.seed ?? Math.floor(Math.random() * 2 ** 32), "generate");
  const V = cfg.dVocab;
  const pick = (logits: Float32Array): number =>
    sampleLogits(logits, { temperature, topK, topP }, rng);
  const finished = new Uint8Array(B);
  const W = (cfg.nHeads + 2 * cfg.nKeyValueHeads) * cfg.dHead;
  using scope = backend.scope();
  const kvCache: KvCache | undefined = (opts.usePastKvCache ?? true)
    ? {
      qkv: Array.from({ length: cfg.nLayers }, () => scope.alloc(B * total * W)),
      capacity: total,
    }
    : undefined;

  let produced = 0;
  for (let step = 0; step < maxNew; step++) {
    const T = T0 + step;
    const pad = padding && { first: padding.first, end: Int32Array.from({ length: B }, () => T) };
    const plan: ForwardPlan = { batch: B, T, padding: pad, kvCache };
    const next = new Int32Array(B);
    const where = (b: number) => `generate, new token ${step + 1} of sequence ${b}`;
    const collect = async (first: number, count: number, logits: DeviceArray) => {
      if (greedy) {
        // argmaxRows skips NaN (all NaN gives 0), so a row holding NaN is told by its log-sum-exp,
        // which NaN makes NaN: an error, not token 0.
        const [best, lse] = await Promise.all([
          backend.argmaxRows(logits, count, V),
          backend.logSumExpRows(logits, count, V),
        ]);
        for (let i = 0; i < count; i++) {
          if (Number.isNaN(lse[i])) {
            throw new NumericError(
              `${where(first + i)}: the logits hold NaN, so no token can be picked (a hook that ` +
                `wrote NaN, or weights that hold it: check the hooks, or checkFinite the weights)`,
            );
          }
        }
        next.set(best, first);
      } else {
        const all = await backend.read(logits);
        for (let i = 0; i < count; i++) {
          try {
            next[first + i] = pick(all.subarray(i * V, (i + 1) * V));
          } catch (e) {
            if (!(e instanceof NumericError)) throw e;
            throw new NumericError(`${where(first + i)}: ${e.message}`);
          }
        }
      }
    };
    if (kvCache && step > 0) {
      // Only the newest position of each sequence: its keys and values join the cache.
      plan.qStart = Array.from({ length: B }, () => T - 1);
      plan.tokens = {
        data: Int32Array.from({ length: B }, (_, b) => seqs[b * total + T - 1]),
        shape: [B, 1],
      };
      plan.unembed = { each: collect };
    } else {
      const data = new Int32Array(B * T);
      for (let b = 0; b < B; b++) data.set(seqs.subarray(b * total, b * total + T), b * T);
      if (embeds) plan.embeds = promptEmbeds(embeds, data, B, T, m.params.W_E.data);
      else plan.tokens = { data, shape: [B, T] };
      plan.unembed = {
        rows: Int32Array.from({ length: B }, (_, b) => b * T + T - 1),
        each: collect,
      };
    }
    await forward(m, plan, ctx.session);
    for (let b = 0; b < B; b++) {
      let tok = next[b];
      if (stopAtEos && finished[b]) tok = eos!;
      if (stopAtEos && tok === eos) finished[b] = 1;
      seqs[b * total + T] = tok;
    }
    produced = step + 1;
    if (stopAtEos && finished.every((f) => f === 1)) break;
  }

  // From embeddings, only the new tokens (the prompt has no ids), as TL.
  const from = embeds ? T0 : 0;
  const out = Array.from(
    { length: B },
    (_, b) => Array.from(seqs.subarray(b * total + from, b * total + T0 + produced)),
  );
  const asText = returnType === "str" || (returnType === "input" && isText);
  if (!asText) return out;
  const tok = needTokenizer(text);
  const special = new Set([cfg.bosTokenId, cfg.eosTokenId ?? -1, eos ?? -1]);
  const decoded = out.map((r) => tok.decode(r.filter((id) => !special.has(id))));
  return typeof input === "string" ? decoded[0] : decoded;
}

/**
 * The input as token embeddings [batch, pos, d_model] (TL's `input_type="embeds"`), or undefined
 * when it is text or token ids.
 */
function embedsOf(input: unknown, dModel: number): Tensor | undefined {
  const t = input as Tensor;
  if (typeof input !== "object" || input === null || !(t.data instanceof Float32Array)) {
    return undefined;
  }
  const [b, T, d] = t.shape ?? [];
  if (
    !Array.isArray(t.shape) || t.shape.length !== 3 || d !== dModel || !(b > 0) || !(T > 0) ||
    t.data.length !== b * T * d
  ) {
    throw new InputError(
      `generate from embeddings takes a Tensor [batch, pos, d_model = ${dModel}] of token ` +
        `embeddings (W_E rows, before position embeddings), got shape [${t.shape}] with ` +
        `${t.data.length} values`,
    );
  }
  const bad = t.data.findIndex((x) => !Number.isFinite(x));
  if (bad >= 0) {
    throw new InputError(`generate: the embeddings have a non-finite value at index ${bad}`);
  }
  return t;
}

/** The rows of a full pass from embeddings: the prompt's given rows, then W_E of new tokens. */
function promptEmbeds(
  embeds: Tensor,
  ids: Int32Array,
  B: number,
  T: number,
  WE: Float32Array,
): Float32Array {
  const [, T0, d] = embeds.shape;
  const out = new Float32Array(B * T * d);
  for (let b = 0; b < B; b++) {
    out.set(embeds.data.subarray(b * T0 * d, (b + 1) * T0 * d), b * T * d);
    for (let t = T0; t < T; t++) {
      const id = ids[b * T + t];
      out.set(WE.subarray(id * d, (id + 1) * d), (b * T + t) * d);
    }
  }
  return out;
}

/** Sampling settings (see {@link GenerateOptions}). */
export interface SamplingOptions {
  temperature: number;
  topK?: number;
  topP?: number;
}

/**
 * One token drawn from a row of logits as TransformerLens's `sample_logits` does: argmax at
 * temperature 0; else logits / temperature, then top-k (keep logits >= the k-th largest) or
 * top-p (keep the most likely tokens until their probability reaches p, at least one), then a
 * draw from the softmax of what is kept. Computed in float64. A row holding NaN, or one with no
 * token of finite positive probability when sampling (a +Infinity logit, or every logit
 * -Infinity), is a {@link NumericError}, as `torch.multinomial` refuses it: never a silent pick.
 *
 * @example
 * ```ts
 * import { sampleLogits } from "./generate.ts";
 * import { SeededRng } from "../core/rng.ts";
 * const logits = new Float32Array([0, 5, 1]);
 * sampleLogits(logits, { temperature: 0 }, new SeededRng(1)); // 1
 * sampleLogits(logits, { temperature: 1, topK: 1 }, new SeededRng(1)); // 1
 * ```
 */
export function sampleLogits(logits: Float32Array, s: SamplingOptions, rng: SeededRng): number {
  const n = logits.length;
  const nan = logits.findIndex(Number.isNaN);
  if (nan >= 0) {
    throw new NumericError(
      `the logits hold NaN (token ${nan} first), so no token can be picked (a hook that wrote ` +
        `NaN, or weights that hold it: check the hooks, or checkFinite the weights)`,
    );
  }
  if (s.temperature === 0) {
    let best = 0;
    for (let j = 1; j < n; j++) if (logits[j] > logits[best]) best = j;
    return best;
  }
  const x = Float64Array.from(logits, (v) => v / s.temperature);
  if (s.topK !== undefined && s.topK < n) {
    const kth = Float64Array.from(x).sort().reverse()[s.topK - 1];
    for (let j = 0; j < n; j++) if (x[j] < kth) x[j] = -Infinity;
  } else if (s.topP !== undefined) {
    const order = Array.from({ length: n }, (_, j) => j).sort((a, b) => x[b] - x[a]);
    const max = x[order[0]];
    let z = 0;
    for (const j of order) z += Math.exp(x[j] - max);
    let cum = 0;
    for (let i = 0; i < n; i++) {
      const j = order[i];
      const removed = i > 0 && cum > s.topP; // the first token past p is kept (TL's shift)
      cum += Math.exp(x[j] - max) / z;
      if (removed) x[j] = -Infinity;
    }
  }
  let max = -Infinity;
  for (const v of x) if (v > max) max = v;
  let z = 0;
  for (let j = 0; j < n; j++) z += x[j] === -Infinity ? 0 : Math.exp(x[j] - max);
  if (!(z > 0 && z < Infinity)) {
    throw new NumericError(
      max === Infinity
        ? `a logit is +Infinity, so the probabilities are not defined (softmax gives NaN)`
        : `every logit is -Infinity, so no token has a probability to be drawn with`,
    );
  }
  let u = rng.uniform() * z;
  for (let j = 0; j < n; j++) {
    if (x[j] === -Infinity) continue;
    u -= Math.exp(x[j] - max);
    if (u < 0) return j;
  }
  for (let j = n - 1; j >= 0; j--) if (x[j] !== -Infinity) return j; // rounding at the end
  return 0;
}
