/**
 * Generation speed: greedy `generate` from one prompt, with the key/value cache (each new token
 * computes one position) and without it (each new token recomputes the whole prefix), in tokens
 * per second. Both must produce the same tokens; the figures are reported as a ratio.
 * @module
 */
import type { HookedTransformer } from "../mod.ts";

/** Tokens per second with and without the key/value cache. */
export interface GenerationResult {
  prompt: number;
  newTokens: number;
  /** Tokens per second with the cache (median of the runs). */
  cached: number;
  /** Tokens per second recomputing the prefix for every token. */
  uncached: number;
  /** Whether both produced the same tokens (they must). */
  sameTokens: boolean;
}

/**
 * Times greedy generation of `newTokens` tokens after `prompt`, `reps` times each way.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { generationSpeed } from "./generate_bench.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const r = await generationSpeed(model, [2047, 5, 9, 13], 4, 1);
 * r.sameTokens; // true
 * ```
 */
export async function generationSpeed(
  model: HookedTransformer,
  prompt: number[],
  newTokens: number,
  reps = 3,
): Promise<GenerationResult> {
  const opts = { maxNewTokens: newTokens, temperature: 0, stopAtEos: false };
  const time = async (usePastKvCache: boolean) => {
    let tokens: unknown;
    const rates: number[] = [];
    for (let i = 0; i < reps; i++) {
      const t = performance.now();
      tokens = await model.generate([prompt], { ...opts, usePastKvCache });
      rates.push(newTokens / ((performance.now() - t) / 1000));
    }
    rates.sort((a, b) => a - b);
    return { rate: rates[Math.floor(rates.length / 2)], tokens };
  };
  const cached = await time(true), uncached = await time(false);
  return {
    prompt: prompt.length,
    newTokens,
    cached: cached.rate,
    uncached: uncached.rate,
    sameTokens: JSON.stringify(cached.tokens) === JSON.stringify(uncached.tokens),
  };
}
