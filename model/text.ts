/**
 * Text <-> tokens as TransformerLens's tokenizer helpers do it (`to_tokens`, `to_str_tokens`,
 * `to_string`, `to_single_token`, `get_token_position`), over the model's tokenizer: BOS
 * prepended by default, batches of strings padded (right by default, as TL) with their padding
 * returned so runs can mask it.
 * @module
 */
import { InputError } from "../core/errors.ts";
import { type Tensor, tensor } from "../core/tensor.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import type { HookedTransformerConfig } from "./config.ts";
import { type Padding, type PaddingSide, padSequences } from "./padding.ts";
import type { TokenTensor } from "./tokens.ts";

/** How text is tokenized. */
export interface TokenizeOptions {
  /** Put the BOS token first (default: the model's `defaultPrependBos`, true for GPT-2). */
  prependBos?: boolean;
  /** Where pad tokens go when strings of different lengths are batched (default `"right"`). */
  paddingSide?: PaddingSide;
  /**
   * `toTokens` only: keep at most the model's n_ctx tokens of each text, BOS included, dropping
   * the rest (default true, as TL's `to_tokens(truncate=True)`); false keeps every token (a run
   * of more than n_ctx positions is then an InputError).
   */
  truncate?: boolean;
}

/** The model's tokenizer and config, which every helper here reads. */
export interface TextModel {
  tokenizer: Tokenizer | undefined;
  cfg: HookedTransformerConfig;
}

/**
 * The tokenizer, or an {@link InputError} saying the model takes token ids only.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { needTokenizer } from "./text.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * try {
 *   needTokenizer(model);
 * } catch (e) {
 *   (e as Error).message; // "induction-toy has no text tokenizer: pass token ids ..."
 * }
 * ```
 */
export function needTokenizer({ tokenizer, cfg }: TextModel): Tokenizer {
  if (!tokenizer) {
    throw new InputError(
      `${cfg.modelName} has no text tokenizer: pass token ids (numbers in [0, ${cfg.dVocab})) ` +
        `instead of text`,
    );
  }
  return tokenizer;
}

function checkTokenizeOptions(opts: TokenizeOptions): void {
  if (opts.prependBos !== undefined && typeof opts.prependBos !== "boolean") {
    throw new InputError(
      `prependBos must be true or false, got ${JSON.stringify(opts.prependBos)}`,
    );
  }
}

/**
 * One text's ids, BOS first unless `prependBos` is false.
 *
 * @example
 * ```ts
 * import { encodeText } from "./text.ts";
 * import { gpt2Config } from "../families/gpt2.ts";
 * const cfg = gpt2Config({ n_layer: 1, n_head: 1, n_embd: 4, vocab_size: 300, n_positions: 8 });
 * const tokenizer = {
 *   vocabSize: 300,
 *   encode: (t: string) => Array.from(t, (c) => c.charCodeAt(0)),
 *   decode: (ids: number[]) => String.fromCharCode(...ids),
 *   tokenStrings: (ids: number[]) => ids.map((i) => String.fromCharCode(i)),
 * };
 * encodeText({ tokenizer, cfg }, "hi"); // [cfg.bosTokenId, 104, 105]
 * ```
 */
export function encodeText(model: TextModel, text: string, opts: TokenizeOptions = {}): number[] {
  if (typeof text !== "string") {
    throw new InputError(`expected text (a string), got ${JSON.stringify(text)}`);
  }
  checkTokenizeOptions(opts);
  const ids = needTokenizer(model).encode(text);
  return (opts.prependBos ?? model.cfg.defaultPrependBos) ? [model.cfg.bosTokenId, ...ids] : ids;
}

/**
 * A string or a list of strings as one padded batch [batch, pos] and its padding (TL's
 * `to_tokens`). The pad id is the EOS token (TL's GPT-2 default), else BOS.
 *
 * @example
 * ```ts
 * import { encodeBatch } from "./text.ts";
 * import { gpt2Config } from "../families/gpt2.ts";
 * const cfg = gpt2Config({ n_layer: 1, n_head: 1, n_embd: 4, vocab_size: 300, n_positions: 8 });
 * const tokenizer = {
 *   vocabSize: 300,
 *   encode: (t: string) => Array.from(t, (c) => c.charCodeAt(0)),
 *   decode: (ids: number[]) => String.fromCharCode(...ids),
 *   tokenStrings: (ids: number[]) => ids.map((i) => String.fromCharCode(i)),
 * };
 * const { tokens, padding } = encodeBatch({ tokenizer, cfg }, ["hi", "a"], { prependBos: false });
 * tokens; // [[104, 105], [97, pad]]
 * padding.end; // Int32Array [2, 1]
 * ```
 */
export function encodeBatch(
  model: TextModel,
  input: string | string[],
  opts: TokenizeOptions = {},
): { tokens: number[][]; padding: Padding } {
  const texts = typeof input === "string" ? [input] : input;
  if (!Array.isArray(texts) || texts.length === 0) {
    throw new InputError("expected a string or a non-empty list of strings");
  }
  if (opts.truncate !== undefined && typeof opts.truncate !== "boolean") {
    throw new InputError(`truncate must be true or false, got ${JSON.stringify(opts.truncate)}`);
  }
  const all = texts.map((t) => encodeText(model, t, opts));
  const seqs = opts.truncate ? all.map((s) => s.slice(0, model.cfg.nCtx)) : all;
  const padId = model.cfg.eosTokenId ?? model.cfg.bosTokenId;
  return padSequences(seqs, padId, opts.paddingSide ?? "right");
}

/**
 * Token ids as rows: `number[]` is one row, `number[][]` and a token tensor are a batch.
 *
 * @example
 * ```ts
 * import { tokenRows } from "./text.ts";
 * tokenRows([1, 2]); // [[1, 2]]
 * tokenRows({ data: Int32Array.of(1, 2, 3, 4), shape: [2, 2] }); // [[1, 2], [3, 4]]
 * ```
 */
export function tokenRows(input: number[] | number[][] | TokenTensor): number[][] {
  if (Array.isArray(input)) {
    if (input.length > 0 && Array.isArray(input[0])) return input as number[][];
    return [input as number[]];
  }
  if (input && input.data instanceof Int32Array && input.shape?.length === 2) {
    const [b, t] = input.shape;
    return Array.from({ length: b }, (_, i) => Array.from(input.data.subarray(i * t, i * t + t)));
  }
  throw new InputError("expected token ids: number[], number[][] or { data: Int32Array, shape }");
}

/**
 * Each token as its text (TL's `to_str_tokens`): text is tokenized first; a batch (a list of
 * strings, `number[][]` or a token tensor) gives one list per sequence.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { strTokens } from "./text.ts";
 * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
 * strTokens(model, "And God said"); // ["<|endoftext|>", "And", " God", " said"]
 * ```
 */
export function strTokens(
  model: TextModel,
  input: string | string[] | number[] | number[][] | TokenTensor,
  opts: TokenizeOptions = {},
): string[] | string[][] {
  const tok = needTokenizer(model);
  if (typeof input === "string") return tok.tokenStrings(encodeText(model, input, opts));
  if (Array.isArray(input) && typeof input[0] === "string") {
    return (input as string[]).map((t) => tok.tokenStrings(encodeText(model, t, opts)));
  }
  const rows = tokenRows(input as number[] | number[][] | TokenTensor);
  const strs = rows.map((r) => tok.tokenStrings(r));
  return isOneRow(input) ? strs[0] : strs;
}

/**
 * Token ids as text (TL's `to_string`): one string for one row of ids, one per row for a batch.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { decodeTokens } from "./text.ts";
 * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
 * decodeTokens(model, [[295, 394, 380]]); // ["And God said"]
 * ```
 */
export function decodeTokens(
  model: TextModel,
  tokens: number[] | number[][] | TokenTensor,
): string | string[] {
  const tok = needTokenizer(model);
  const rows = tokenRows(tokens);
  return isOneRow(tokens) ? tok.decode(rows[0]) : rows.map((r) => tok.decode(r));
}

/** Whether token input is a single row of ids (`number[]`) rather than a batch. */
function isOneRow(input: unknown): boolean {
  return Array.isArray(input) && !Array.isArray(input[0]);
}

/**
 * The id of a text that is exactly one token (TL's `to_single_token`), else an InputError.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { singleToken } from "./text.ts";
 * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
 * singleToken(model, " Moses"); // 671 with kjv-small's tokenizer
 * ```
 */
export function singleToken(model: TextModel, text: string): number {
  const ids = encodeText(model, text, { prependBos: false });
  if (ids.length !== 1) {
    throw new InputError(
      `${JSON.stringify(text)} is ${ids.length} tokens, not one` +
        (ids.length ? ` (${JSON.stringify(needTokenizer(model).tokenStrings(ids))})` : ""),
    );
  }
  return ids[0];
}

/** Options of `getTokenPosition`. */
export interface TokenPositionOptions extends TokenizeOptions {
  /** Which occurrence when the token appears more than once (default `"first"`). */
  mode?: "first" | "last";
}

/**
 * The position of `token` (an id, or text that is one token) in `input` (text, one row of ids, or
 * a batch of one row), as TL's `get_token_position`; an InputError when it does not occur.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { tokenPosition } from "./text.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * tokenPosition(model, 9, [2047, 5, 9, 5, 9], { mode: "last" }); // 4
 * ```
 */
export function tokenPosition(
  model: TextModel,
  token: string | number,
  input: string | number[] | number[][] | TokenTensor,
  opts: TokenPositionOptions = {},
): number {
  const mode = opts.mode ?? "first";
  if (mode !== "first" && mode !== "last") {
    throw new InputError(`mode must be "first" or "last", got ${JSON.stringify(mode)}`);
  }
  const rows = typeof input === "string" ? [encodeText(model, input, opts)] : tokenRows(input);
  if (rows.length !== 1) {
    throw new InputError(`getTokenPosition takes one sequence, got a batch of ${rows.length}`);
  }
  const id = typeof token === "string" ? singleToken(model, token) : token;
  const row = rows[0];
  const at = mode === "first" ? row.indexOf(id) : row.lastIndexOf(id);
  if (at < 0) throw new InputError(`token ${id} does not occur in the sequence`);
  return at;
}

/** What {@link getAttentionMask} reads of a model: its special tokens (a `HookedTransformer`). */
export interface PadModel {
  /** The config's BOS and EOS ids (the pad token is EOS, else BOS) and whether BOS is prepended. */
  cfg: Pick<HookedTransformerConfig, "bosTokenId" | "eosTokenId" | "defaultPrependBos">;
}

/**
 * The attention mask TransformerLens derives from pad tokens (`utils.get_attention_mask`), as
 * `number[][]` of 0 (padding) and 1 (real token). The pad token is the one `toTokens` pads with
 * (the model's EOS, else BOS: every model has one, with or without a tokenizer, so the mask is
 * always derived from the ids and never assumed all ones). With `paddingSide: "right"` (the
 * default, as TL's tokenizer) the pads after a row's last non-pad token are masked; with `"left"`
 * the pads before its first non-pad token, except that when BOS is prepended and BOS is the pad token (GPT-2, Pythia) the
 * last of those leading pads is the BOS and stays unmasked. Pad ids between real tokens are
 * never masked (as TL). A row of pads only is left to the run, which refuses it (an
 * {@link InputError}: every sequence needs a real token).
 *
 * @example
 * ```ts
 * import { getAttentionMask } from "./text.ts";
 * // GPT-2: pad = BOS = EOS = 50256; the BOS of the shorter row is kept.
 * const gpt2 = { cfg: { bosTokenId: 50256, eosTokenId: 50256, defaultPrependBos: true } };
 * getAttentionMask(gpt2, [[50256, 50256, 17250], [50256, 15496, 995]], true, "left");
 * // [[0, 1, 1], [1, 1, 1]]
 * getAttentionMask(gpt2, [[50256, 17250, 50256]], true, "right"); // [[1, 1, 0]]
 * ```
 */
export function getAttentionMask(
  model: PadModel,
  tokens: number[] | number[][] | TokenTensor,
  prependBos: boolean = model.cfg.defaultPrependBos,
  paddingSide: PaddingSide = "right",
): number[][] {
  if (paddingSide !== "left" && paddingSide !== "right") {
    throw new InputError(
      `paddingSide must be "left" or "right", got ${JSON.stringify(paddingSide)}`,
    );
  }
  if (typeof prependBos !== "boolean") {
    throw new InputError(`prependBos must be true or false, got ${JSON.stringify(prependBos)}`);
  }
  const pad = model.cfg.eosTokenId ?? model.cfg.bosTokenId;
  return tokenRows(tokens).map((row) => {
    const mask = row.map(() => 1);
    if (paddingSide === "right") {
      for (let t = row.length - 1; t >= 0 && row[t] === pad; t--) mask[t] = 0;
    } else {
      let t = 0;
      for (; t < row.length && row[t] === pad; t++) mask[t] = 0;
      if (prependBos && model.cfg.bosTokenId === pad && t > 0) mask[t - 1] = 1;
    }
    return mask;
  });
}

/**
 * The unembedding's column of each token: the residual direction that raises its logit
 * (TransformerLens's `tokens_to_residual_directions`). One token (an id, or text that is one
 * token) gives [d_model]; a list of ids [n, d_model]; a batch of rows [batch, pos, d_model].
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { tokensToResidualDirections } from "./text.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * tokensToResidualDirections(model, 5).shape; // [d_model]
 * tokensToResidualDirections(model, [[5, 9], [7, 7]]).shape; // [2, 2, d_model]
 * ```
 */
export function tokensToResidualDirections(
  model: TextModel & { readonly W_U: Tensor },
  tokens: number | string | number[] | number[][] | TokenTensor,
): Tensor {
  const W_U = model.W_U;
  const [d, V] = W_U.shape;
  let ids: ArrayLike<number>, lead: number[];
  if (typeof tokens === "string") [ids, lead] = [[singleToken(model, tokens)], []];
  else if (typeof tokens === "number") [ids, lead] = [[tokens], []];
  else if (Array.isArray(tokens) && tokens.every((r) => Array.isArray(r))) {
    const rows = tokens as number[][];
    if (rows.some((r) => r.length !== rows[0].length)) {
      throw new InputError("tokensToResidualDirections: rows of different lengths");
    }
    [ids, lead] = [rows.flat(), rows.length ? [rows.length, rows[0].length] : [0, 0]];
  } else if (Array.isArray(tokens)) [ids, lead] = [tokens as number[], [tokens.length]];
  else if (tokens && tokens.data instanceof Int32Array && Array.isArray(tokens.shape)) {
    [ids, lead] = [tokens.data, tokens.data.length === 1 ? [] : [...tokens.shape]];
  } else {
    throw new InputError(
      "tokensToResidualDirections takes a token id, a one-token text, number[], number[][] or " +
        "{ data: Int32Array, shape }",
    );
  }
  const out = new Float32Array(ids.length * d);
  for (let i = 0; i < ids.length; i++) {
    const t = ids[i];
    if (!Number.isInteger(t) || t < 0 || t >= V) {
      throw new InputError(`tokensToResidualDirections: token ${t} is outside [0, ${V})`);
    }
    for (let k = 0; k < d; k++) out[i * d + k] = W_U.data[k * V + t];
  }
  return tensor(out, [...lead, d]);
}
