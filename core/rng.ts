/**
 * A seeded pseudo-random generator shared by the library (repeated tokens), synthetic weights,
 * tests and benchmarks, so that every run of the same seed sees the same numbers.
 * @module
 */
/**
 * A small, fast, seeded pseudo-random generator (xoshiro128**, seeded through splitmix32), with
 * uniform and normal (ziggurat) draws. Not cryptographic.
 *
 * @example
 * ```ts
 * import { SeededRng } from "./rng.ts";
 * const rng = new SeededRng(42);
 * rng.int(10); // an integer in [0, 10)
 * const w = new Float32Array(1000);
 * rng.fillNormal(w, 0, 0.02);
 * ```
 */
export class SeededRng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  /**
   * Starts a stream from a seed.
   * @param seed Any finite number (its integer part is used); the same seed gives the same stream.
   * @param stream An optional label mixed into the seed, for independent sub-streams.
   */
  constructor(seed: number, stream = "") {
    if (!Number.isFinite(seed)) throw new RangeError(`SeededRng: seed must be finite, got ${seed}`);
    let h = 0x811c9dc5 ^ (seed >>> 0);
    h = Math.imul(h ^ Math.floor(Math.abs(seed) / 2 ** 32), 0x01000193);
    if (seed < 0) h = Math.imul(h ^ 0x5bd1e995, 0x01000193);
    for (let i = 0; i < stream.length; i++) h = Math.imul(h ^ stream.charCodeAt(i), 0x01000193);
    let s = h >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = next();
    this.#b = next();
    this.#c = next();
    this.#d = next();
    if ((this.#a | this.#b | this.#c | this.#d) === 0) this.#a = 1;
  }

  /** The next 32 random bits, as an unsigned integer. */
  nextU32(): number {
    const b = this.#b;
    const t = b << 9;
    let r = Math.imul(b, 5);
    r = Math.imul((r << 7) | (r >>> 25), 9);
    this.#c ^= this.#a;
    this.#d ^= b;
    this.#b ^= this.#c;
    this.#a ^= this.#d;
    this.#c ^= t;
    this.#d = (this.#d << 11) | (this.#d >>> 21);
    return r >>> 0;
  }

  /** A uniform number in [0, 1) with 32 bits of randomness. */
  uniform(): number {
    return this.nextU32() / 2 ** 32;
  }

  /** A uniform integer in [0, n), for 1 <= n <= 2^32. */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** A uniform number in (0, 1), never 0 (safe to take the log of). */
  #open01(): number {
    return (this.nextU32() + 0.5) / 2 ** 32;
  }

  /**
   * A standard normal draw (mean 0, standard deviation 1), by Marsaglia and Tsang's ziggurat
   * method: one 32-bit draw and a multiply almost always. The layer index and the value come from
   * disjoint bits of the draw, which avoids the original method's correlation between them.
   */
  normal(): number {
    const { k, w } = ziggurat();
    const bits = this.nextU32();
    const i = bits & 127;
    const j = (bits | 0) >> 7; // signed, |j| < 2^24
    if (Math.abs(j) < k[i]) return j * w[i]; // inside the rectangle: done (about 99%)
    return this.#normalSlow(i, j);
  }

  /** The ziggurat's rare cases: the base layer's tail, or a draw in a layer's wedge. */
  #normalSlow(i: number, j: number): number {
    const { k, w, f } = ziggurat();
    for (;;) {
      const x = j * w[i];
      if (i === 0) {
        // The tail beyond R, by Marsaglia's exponential method.
        let t: number;
        let y: number;
        do {
          t = -Math.log(this.#open01()) / ZIG_R;
          y = -Math.log(this.#open01());
        } while (y + y < t * t);
        return j > 0 ? ZIG_R + t : -ZIG_R - t;
      }
      if (f[i] + this.uniform() * (f[i - 1] - f[i]) < Math.exp(-0.5 * x * x)) return x;
      const bits = this.nextU32();
      i = bits & 127;
      j = (bits | 0) >> 7;
      if (Math.abs(j) < k[i]) return j * w[i];
    }
  }

  /** Fills `out` with normal draws of the given mean and standard deviation. */
  fillNormal(out: Float32Array, mean = 0, std = 1): void {
    // The generator and the ziggurat's fast path inlined on local state (this loop makes every
    // weight of a synthetic GPT-2); the rare slow path syncs the state and calls normal().
    const { k, w } = ziggurat();
    let a = this.#a, b = this.#b, c = this.#c, d = this.#d;
    for (let n = 0; n < out.length; n++) {
      let r = Math.imul(b, 5);
      r = Math.imul((r << 7) | (r >>> 25), 9);
      const t = b << 9;
      c ^= a;
      d ^= b;
      b ^= c;
      a ^= d;
      c ^= t;
      d = (d << 11) | (d >>> 21);
      const i = r & 127;
      const j = r >> 7;
      if (Math.abs(j) < k[i]) {
        out[n] = mean + std * (j * w[i]);
        continue;
      }
      this.#a = a;
      this.#b = b;
      this.#c = c;
      this.#d = d;
      out[n] = mean + std * this.#normalSlow(i, j);
      a = this.#a;
      b = this.#b;
      c = this.#c;
      d = this.#d;
    }
    this.#a = a;
    this.#b = b;
    this.#c = c;
    this.#d = d;
  }
}

/** Right edge of the base layer of the 128-layer normal ziggurat. */
const ZIG_R = 3.442619855899;
let zigTables: { k: Int32Array; w: Float64Array; f: Float64Array } | null = null;

/** The ziggurat's tables for 25-bit signed draws (k: acceptance bounds, w: scales, f: density). */
function ziggurat(): { k: Int32Array; w: Float64Array; f: Float64Array } {
  if (zigTables !== null) return zigTables;
  const m = 2 ** 24;
  const v = 9.91256303526217e-3; // area of each layer
  const k = new Int32Array(128); // ceil of the bounds: the same test on integer draws, faster
  const w = new Float64Array(128);
  const f = new Float64Array(128);
  let dn = ZIG_R;
  let tn = dn;
  const q = v / Math.exp(-0.5 * dn * dn);
  k[0] = Math.ceil((dn / q) * m);
  k[1] = 0;
  w[0] = q / m;
  w[127] = dn / m;
  f[0] = 1;
  f[127] = Math.exp(-0.5 * dn * dn);
  for (let i = 126; i >= 1; i--) {
    dn = Math.sqrt(-2 * Math.log(v / dn + Math.exp(-0.5 * dn * dn)));
    k[i + 1] = Math.ceil((dn / tn) * m);
    tn = dn;
    f[i] = Math.exp(-0.5 * dn * dn);
    w[i] = dn / m;
  }
  zigTables = { k, w, f };
  return zigTables;
}
