/**
 * The angles of rotary position embeddings: each head's dims i and i + rotaryDim/2 turn by
 * position x invFreq[i], with invFreq[i] = rotaryBase^(-2i / rotaryDim), rescaled as Llama 3
 * does when `useNTKByPartsRope` (TransformerLens's `calculate_sin_cos_rotary`, Hugging Face's
 * `rope_type: "llama3"`). Angles, cosines and sines are computed in float64 and rounded once to
 * float32, so even at position 100000 they carry no float32 angle error.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { HookedTransformerConfig } from "./config.ts";

/**
 * The rotary inverse frequencies of a config, in float64 (rotaryDim/2 of them).
 *
 * @example
 * ```ts
 * import { rotaryInvFreq } from "./rotary.ts";
 * import { gptNeoxConfig } from "../families/gpt_neox.ts";
 * const cfg = gptNeoxConfig({
 *   hidden_size: 32, num_attention_heads: 4, num_hidden_layers: 1, vocab_size: 10,
 *   max_position_embeddings: 16, rotary_pct: 0.5,
 * });
 * rotaryInvFreq(cfg); // Float64Array [1, 0.01]: 10000^(-0/4), 10000^(-2/4)
 * ```
 */
export function rotaryInvFreq(cfg: HookedTransformerConfig): Float64Array {
  const dim = cfg.rotaryDim, half = dim / 2;
  const inv = Float64Array.from({ length: half }, (_, i) => cfg.rotaryBase ** (-(2 * i) / dim));
  // HF's "linear" scaling (Gemma 3's global layers): every frequency divided by the factor.
  const linear = cfg.rotaryLinearFactor;
  if (linear !== undefined) return inv.map((f) => f / linear);
  if (!cfg.useNTKByPartsRope) return inv;
  // Llama 3: wavelengths longer than ctx / low are slowed by `factor`, shorter than ctx / high
  // kept, and those between interpolated.
  const factor = cfg.NTKByPartsFactor, ctx = cfg.NTKOriginalCtxLen;
  const low = cfg.NTKByPartsLowFreqFactor, high = cfg.NTKByPartsHighFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < ctx / high) return f;
    if (wavelen > ctx / low) return f / factor;
    const smooth = (ctx / wavelen - low) / (high - low);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}

/**
 * Cosines and sines of every position's rotary angles, computed once per position and kept
 * (grown on demand, up to the context length).
 *
 * @example
 * ```ts
 * import { RotaryTable } from "./rotary.ts";
 * import { gptNeoxConfig } from "../families/gpt_neox.ts";
 * const cfg = gptNeoxConfig({
 *   hidden_size: 32, num_attention_heads: 4, num_hidden_layers: 1, vocab_size: 10,
 *   max_position_embeddings: 16, rotary_pct: 0.5,
 * });
 * const table = new RotaryTable(cfg);
 * table.rows([0, 3]); // [cos 0, cos 0, sin 0, sin 0, cos 3, cos 0.03, sin 3, sin 0.03]
 * ```
 */
export class RotaryTable {
  readonly #invFreq: Float64Array;
  readonly #dim: number;
  readonly #nCtx: number;
  /** Row p: the cosines of position p's angles, then their sines. */
  #rows = new Float32Array(0);

  /** The table of a rotary config. */
  constructor(cfg: HookedTransformerConfig) {
    this.#invFreq = rotaryInvFreq(cfg);
    this.#dim = cfg.rotaryDim;
    this.#nCtx = cfg.nCtx;
  }

  /** Rows [positions.length, rotaryDim]: each position's cosines, then its sines. */
  rows(positions: ArrayLike<number>): Float32Array {
    let max = -1;
    for (let i = 0; i < positions.length; i++) {
      const p = positions[i];
      if (!Number.isInteger(p) || p < 0 || p >= this.#nCtx) {
        throw new InputError(`position ${p} is outside the model's context [0, ${this.#nCtx})`);
      }
      max = Math.max(max, p);
    }
    this.#grow(max + 1);
    const dim = this.#dim, out = new Float32Array(positions.length * dim);
    for (let i = 0; i < positions.length; i++) {
      const p = positions[i];
      out.set(this.#rows.subarray(p * dim, (p + 1) * dim), i * dim);
    }
    return out;
  }

  /**
   * Rows of the inverse rotation (each position's angles negated: the cosines, then the negated
   * sines), which carries a gradient back through rotary, since the rotation is orthogonal.
   */
  inverseRows(positions: ArrayLike<number>): Float32Array {
    const out = this.rows(positions), dim = this.#dim;
    for (let r = 0; r < positions.length; r++) {
      for (let i = dim / 2; i < dim; i++) out[r * dim + i] = -out[r * dim + i];
    }
    return out;
  }

  #grow(n: number): void {
    const dim = this.#dim, half = dim / 2, have = this.#rows.length / dim;
    if (n <= have) return;
    const size = Math.min(this.#nCtx, Math.max(n, 2 * have, 64));
    const rows = new Float32Array(size * dim);
    rows.set(this.#rows);
    for (let p = have; p < size; p++) {
      for (let i = 0; i < half; i++) {
        const angle = p * this.#invFreq[i];
        rows[p * dim + i] = Math.cos(angle);
        rows[p * dim + half + i] = Math.sin(angle);
      }
    }
    this.#rows = rows;
  }
}

/**
 * The rotary table of a config's local (sliding-window) layers, when they have their own base
 * (Gemma 3's `rope_local_base_freq`, with no scaling), else null: those layers use the global
 * table.
 *
 * @example
 * ```ts
 * import { localRotaryTable } from "./rotary.ts";
 * import { gptNeoxConfig } from "../families/gpt_neox.ts";
 * const cfg = gptNeoxConfig({
 *   hidden_size: 32, num_attention_heads: 4, num_hidden_layers: 1, vocab_size: 10,
 *   max_position_embeddings: 16,
 * });
 * localRotaryTable(cfg); // null
 * localRotaryTable({ ...cfg, rotaryBaseLocal: 10000 })?.rows([1]).length; // 8
 * ```
 */
export function localRotaryTable(cfg: HookedTransformerConfig): RotaryTable | null {
  if (cfg.rotaryBaseLocal === undefined || cfg.positionalEmbeddingType !== "rotary") return null;
  return new RotaryTable({
    ...cfg,
    rotaryBase: cfg.rotaryBaseLocal,
    rotaryLinearFactor: undefined,
    useNTKByPartsRope: false,
  });
}
