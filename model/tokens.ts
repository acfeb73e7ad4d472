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

/**
 * Normalises and validates tokens against a config: integer ids in [0, d_vocab), at most n_ctx
 * positions, no ragged rows, not empty. Throws {@link InputError} before any compute.
 */
export function toTokenTensor(
  tokens: Tokens,
  cfg: Pick<HookedTransformerConfig, "dVocab" | "nCtx" | "modelName">,
): TokenTensor {
  let data: Int32Array;
  let batch: number;
  let pos: number;
  if (Array.isArray(tokens)) {
    const rows = (tokens.length > 0 && Array.isArray(tokens[0]))
      ? tokens as number[][]
      : [tokens as number[]];
    batch = rows.length;
    pos = rows[0]?.length ?? 0;
    data = new Int32Array(batch * pos);
    rows.forEach((row, b) => {
      if (!Array.isArray(row)) throw new InputError(`tokens row ${b} is not an array of ids`);
      if (row.length !== pos) {
        throw new InputError(
          `ragged batch: row 0 has ${pos} tokens but row ${b} has ${row.length}; ` +
            `pad or split the batch so every row has the same length`,
        );
      }
      row.forEach((id, t) => {
        checkId(id, b, t, cfg);
        data[b * pos + t] = id;
      });
    });
  } else if (tokens && tokens.data instanceof Int32Array && Array.isArray(tokens.shape)) {
    if (tokens.shape.length !== 2) {
      throw new InputError(`token tensor must have shape [batch, pos], got [${tokens.shape}]`);
    }
    [batch, pos] = tokens.shape;
    if (tokens.data.length !== batch * pos) {
      throw new InputError(
        `token tensor has ${tokens.data.length} ids but shape [${tokens.shape}] needs ${
          batch * pos
        }`,
      );
    }
    data = tokens.data;
    for (let i = 0; i < data.length; i++) checkId(data[i], Math.floor(i / pos), i % pos, cfg);
  } else {
    throw new InputError("tokens must be number[], number[][] or { data: Int32Array, shape }");
  }
  if (batch === 0 || pos === 0) throw new InputError("tokens are empty: give at least one token");
  if (pos > cfg.nCtx) {
    throw new InputError(
      `sequence of ${pos} tokens is longer than the model's context n_ctx = ${cfg.nCtx}; ` +
        `truncate it to ${cfg.nCtx} tokens`,
    );
  }
  return { data, shape: [batch, pos] };
}

function checkId(
  id: number,
  b: number,
  t: number,
  cfg: Pick<HookedTransformerConfig, "dVocab" | "modelName">,
) {
  if (!Number.isInteger(id) || id < 0 || id >= cfg.dVocab) {
    throw new InputError(
      `token id ${id} at [${b}, ${t}] is outside the vocabulary [0, ${cfg.dVocab}) of ${cfg.modelName}`,
    );
  }
}
