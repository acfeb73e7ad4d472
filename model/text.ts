/**
 * Text <-> tokens as TransformerLens's tokenizer helpers do it (`to_tokens`, `to_str_tokens`,
 * `to_string`, `to_single_token`, `get_token_position`), over the model's tokenizer: BOS
 * prepended by default, batches of strings padded (right by default, as TL) with their padding
 * returned so runs can mask it.
 * @module
 */
import { InputError } from "../core/errors.ts";
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
  const seqs = texts.map((t) => encodeText(model, t, opts));
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
