/**
 * Token batches: the accepted input forms and their validation.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { HookedTransformerConfig } from "./config.ts";

/**
 * Token ids for a run: one sequence (`number[]`), a batch (`number[][]`, all the same length), or
 * an `Int32Array` with a `[batch, pos]` shape.
 *
 * @example
 * ```ts ignore
 * await model.run([[2047, 5, 9, 5]]);
 * await model.run({ data: Int32Array.from([2047, 5, 9, 5]), shape: [1, 4] });
 * ```
 */
export type Tokens = number[] | number[][] | TokenTensor;

/** A `[batch, pos]` batch of token ids, row-major. */
export interface TokenTensor {
  /** The ids, row-major. */
  data: Int32Array;
  /** `[batch, pos]`. */
  shape: [number, number] | number[];
}

/** What token validation reads of a model's config. */
export type TokenConfig = Pick<HookedTransformerConfig, "dVocab" | "nCtx" | "modelName">;

/**
 * Normalises and validates tokens against a config: integer ids in [0, d_vocab), at most n_ctx
 * positions, no ragged rows, no holes, not empty; a `{ data, shape }` tensor needs an
 * `Int32Array` and a `[batch, pos]` shape of non-negative integers that matches it. Throws
 * {@link InputError} naming the problem before any compute. Arrays are copied; a tensor's data is
 * used as is.
 *
 * @example
 * ```ts
 * import { toTokenTensor } from "./tokens.ts";
 * const cfg = { dVocab: 10, nCtx: 8, modelName: "toy" };
 * toTokenTensor([[1, 2, 3]], cfg).shape; // [1, 3]
 * toTokenTensor({ data: Int32Array.from([1, 2, 3, 4]), shape: [2, 2] }, cfg).shape; // [2, 2]
 * ```
 */
export function toTokenTensor(tokens: Tokens, cfg: TokenConfig): TokenTensor {
  const { data, batch, pos } = Array.isArray(tokens)
    ? fromArrays(tokens, cfg)
    : fromTensor(tokens, cfg);
  if (batch === 0 || pos === 0) throw new InputError("tokens are empty: give at least one token");
  if (pos > cfg.nCtx) {
    throw new InputError(
      `sequence of ${pos} tokens is longer than the model's context n_ctx = ${cfg.nCtx}; ` +
        `truncate it to ${cfg.nCtx} tokens`,
    );
  }
  return { data, shape: [batch, pos] };
}

interface Checked {
  data: Int32Array;
  batch: number;
  pos: number;
}

const FORMS = "number[] (one sequence), number[][] (a batch) or { data: Int32Array, shape: " +
  "[batch, pos] }";

function fromArrays(tokens: unknown[], cfg: TokenConfig): Checked {
  const nested = tokens.length > 0 && Array.isArray(tokens[0]);
  const rows = nested ? tokens : [tokens];
  const batch = rows.length;
  const pos = (rows[0] as unknown[] | undefined)?.length ?? 0;
  const data = new Int32Array(batch * pos);
  // Index loops, not forEach: forEach skips holes, which would run as token 0.
  for (let b = 0; b < batch; b++) {
    if (!(b in rows)) {
      throw new InputError(`tokens[${b}] is a hole in the array (no value): ${FORMS} expected`);
    }
    const row = rows[b];
    if (!Array.isArray(row)) {
      throw new InputError(
        `tokens[${b}] is ${describe(row)} but tokens[0] is an array: give ${FORMS}, not a mix`,
      );
    }
    if (row.length !== pos) {
      throw new InputError(
        `ragged batch: row 0 has ${pos} tokens but row ${b} has ${row.length}; ` +
          `pad or split the batch so every row has the same length`,
      );
    }
    for (let t = 0; t < pos; t++) {
      if (!(t in row)) {
        throw new InputError(
          `token at [${b}, ${t}] is a hole in the array (no value): every position needs a ` +
            `token id`,
        );
      }
      const id = row[t];
      checkId(id, b, t, cfg);
      data[b * pos + t] = id;
    }
  }
  return { data, batch, pos };
}

function fromTensor(tokens: unknown, cfg: TokenConfig): Checked {
  if (typeof tokens !== "object" || tokens === null || !("data" in tokens)) {
    const hint = typeof tokens === "string" ? " (encode text with model.toTokens first)" : "";
    throw new InputError(`tokens must be ${FORMS}; got ${describe(tokens)}${hint}`);
  }
  const { data, shape } = tokens as { data: unknown; shape: unknown };
  if (
    (data instanceof Float32Array || data instanceof Float64Array) && Array.isArray(shape) &&
    shape.length === 3
  ) {
    throw new InputError(
      `a ${data.constructor.name} of shape [${shape}] holds vectors (embeddings or a residual ` +
        `stream), not token ids: run from a residual stream with startAtLayer, generate from ` +
        `embeddings with inputType: "embeds"; token ids are an Int32Array [batch, pos]`,
    );
  }
  if (!(data instanceof Int32Array)) {
    throw new InputError(
      `token tensor data must be an Int32Array, got ${describe(data)}; convert it with ` +
        `Int32Array.from(ids)`,
    );
  }
  if (!Array.isArray(shape) || shape.length !== 2) {
    throw new InputError(
      `token tensor must have shape [batch, pos], got ${
        Array.isArray(shape) ? `[${shape}]` : describe(shape)
      }`,
    );
  }
  for (let i = 0; i < 2; i++) {
    const d = shape[i];
    if (typeof d !== "number" || !Number.isInteger(d) || d < 0) {
      throw new InputError(
        `token tensor shape [${shape}] must hold non-negative integers [batch, pos], but ` +
          `${i === 0 ? "batch" : "pos"} is ${describe(d)}`,
      );
    }
  }
  const [batch, pos] = shape as number[];
  if (data.length !== batch * pos) {
    throw new InputError(
      `token tensor has ${data.length} ids but shape [${shape}] needs ${batch * pos}`,
    );
  }
  for (let i = 0; i < data.length; i++) {
    if (data[i] < 0 || data[i] >= cfg.dVocab) checkId(data[i], Math.floor(i / pos), i % pos, cfg);
  }
  return { data, batch, pos };
}

/** A value as an error message names it: `the string "3"`, `null`, `an object`, `1.5`. */
function describe(v: unknown): string {
  if (v === null) return "null";
  if (v === undefined) return "undefined";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") {
    return `the string ${JSON.stringify(v.length > 20 ? v.slice(0, 20) + "…" : v)}`;
  }
  if (typeof v === "number") return String(v);
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  if (typeof v === "object") return `an object`;
  return `a ${typeof v}`;
}

function checkId(
  id: unknown,
  b: number,
  t: number,
  cfg: TokenConfig,
): asserts id is number {
  if (typeof id === "number" && Number.isInteger(id) && id >= 0 && id < cfg.dVocab) return;
  const vocab = `[0, ${cfg.dVocab}) of ${cfg.modelName}`;
  if (typeof id === "number" && Number.isInteger(id)) {
    throw new InputError(`token id ${id} at [${b}, ${t}] is outside the vocabulary ${vocab}`);
  }
  const hint = typeof id === "string"
    ? `; token ids are numbers, not strings (Number(${JSON.stringify(id)}) if it is an id)`
    : "";
  throw new InputError(
    `token at [${b}, ${t}] is ${describe(id)}, not an integer token id in ${vocab}${hint}`,
  );
}
