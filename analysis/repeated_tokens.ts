/**
 * The study's input: sequences of random tokens repeated once, `[BOS] + r + r`.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { TokenTensor } from "../model/tokens.ts";
import type { HookedTransformerConfig } from "../model/config.ts";
import { SeededRng } from "../core/rng.ts";

/**
 * Options of {@link generateRepeatedTokens}.
 *
 * @example
 * ```ts ignore
 * generateRepeatedTokens(model, 50, 30, { seed: 1 });
 * ```
 */
export interface RepeatedTokensOptions {
  /** PRNG seed (default 0): the same seed, sizes and vocabulary give the same tokens. */
  seed?: number;
}

/** The random stream label of {@link generateRepeatedTokens} (mixed into the seed). */
const STREAM = "repeated-tokens";

/**
 * A batch of repeated random tokens: row b is `[BOS] + r_b + r_b`, r_b being `seqLen` ids drawn
 * uniformly from [0, d_vocab) (the BOS id can be drawn too, as in the study). Shape
 * `[batch, 1 + 2 seqLen]`, ready for `model.run` and the other analyses.
 *
 * Seed semantics: the ids come from `SeededRng(seed, "repeated-tokens")`, drawn row by row, each
 * row's `seqLen` ids in order. So the same `(seed, seqLen, d_vocab)` gives the same rows on every
 * machine and run, and a larger `batch` only appends rows (row b does not depend on `batch`).
 *
 * @example
 * ```ts ignore
 * import { generateRepeatedTokens, HookedTransformer } from "./mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy");
 * const tokens = generateRepeatedTokens(model, 50, 30, { seed: 0 });
 * tokens.shape; // [30, 101]
 * const logits = await model.run(tokens);
 * ```
 */
export function generateRepeatedTokens(
  model: { cfg: Pick<HookedTransformerConfig, "dVocab" | "bosTokenId" | "nCtx"> },
  seqLen: number,
  batch: number,
  opts: RepeatedTokensOptions = {},
): TokenTensor & { shape: [number, number] } {
  const { dVocab, bosTokenId, nCtx } = model.cfg;
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seqLen) || seqLen < 1) {
    throw new InputError(`seqLen must be a positive integer, got ${seqLen}`);
  }
  if (!Number.isInteger(batch) || batch < 1) {
    throw new InputError(`batch must be a positive integer, got ${batch}`);
  }
  if (!Number.isFinite(seed)) throw new InputError(`seed must be a finite number, got ${seed}`);
  const T = 1 + 2 * seqLen;
  if (T > nCtx) {
    throw new InputError(
      `1 + 2 x seqLen = ${T} tokens exceed the model's context n_ctx = ${nCtx}; ` +
        `use seqLen <= ${Math.floor((nCtx - 1) / 2)}`,
    );
  }
  const rng = new SeededRng(seed, STREAM);
  const data = new Int32Array(batch * T);
  for (let b = 0; b < batch; b++) {
    const row = b * T;
    data[row] = bosTokenId;
    for (let i = 0; i < seqLen; i++) {
      const id = rng.int(dVocab);
      data[row + 1 + i] = id;
      data[row + 1 + seqLen + i] = id;
    }
  }
  return { data, shape: [batch, T] };
}

/**
 * Checks that `tokens` is `[batch, 1 + 2 seqLen]` and returns `[batch, T]` (shared by the
 * analyses that take repeated tokens); throws an {@link InputError} otherwise.
 *
 * @example
 * ```ts ignore
 * repeatedShape({ data: new Int32Array(2 * 11), shape: [2, 11] }, 5); // [2, 11]
 * ```
 */
export function repeatedShape(tokens: TokenTensor, seqLen: number): [number, number] {
  if (!Number.isInteger(seqLen) || seqLen < 1) {
    throw new InputError(`seqLen must be a positive integer, got ${seqLen}`);
  }
  const [batch, T] = tokens.shape;
  if (T !== 1 + 2 * seqLen) {
    throw new InputError(
      `tokens have ${T} positions but seqLen ${seqLen} means [BOS] + 2 x ${seqLen} = ${
        1 + 2 * seqLen
      }; pass the seqLen the tokens were generated with`,
    );
  }
  return [batch, T];
}
