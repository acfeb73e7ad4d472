/**
 * What the peer harnesses share: the JSON they print, the FLOP count of a forward pass, the
 * matmul shapes, the logits checksum and the tokens file. `torch_gpt2.py` mirrors
 * {@link forwardFlops}, {@link MATMUL_SHAPES} and the checksum definition in Python.
 * @module
 */

/** [m, k, n] of the matmul benchmark: activations [m, k] times weights [k, n]. */
export const MATMUL_SHAPES: readonly (readonly [number, number, number])[] = [
  [101, 768, 2304], // c_attn of one 101-token sequence
  [101, 768, 3072], // mlp c_fc
  [101, 768, 50257], // unembed
  [3030, 768, 2304], // c_attn of a 30 x 101 batch
];

/** The shape numbers a FLOP count needs. */
export interface FlopShape {
  nLayers: number;
  nHeads: number;
  dModel: number;
  dMlp: number;
  dVocab: number;
}

/**
 * Floating-point operations of one GPT-2 forward pass, counting 2 per multiply-add of the matrix
 * products only: per layer Q, K, V, O (4 d_model^2 per token), the MLP (2 d_model d_mlp per token)
 * and the full (unmasked) attention products Q K^T and pattern V (2 x seq^2 x d_model per
 * sequence), then the unembed (d_model d_vocab per token). The same count is used for every
 * peer, so "effective GFLOP/s" compares like with like even when an implementation skips the
 * masked half of the attention or the logits it does not need.
 *
 * @example
 * ```ts
 * import { forwardFlops } from "./common.ts";
 * const shape = { nLayers: 12, nHeads: 12, dModel: 768, dMlp: 3072, dVocab: 50257 };
 * forwardFlops(shape, 30, 101) / 1e9; // about 760 GFLOP
 * ```
 */
export function forwardFlops(s: FlopShape, batch: number, seq: number): number {
  const rows = batch * seq;
  const perLayer = 2 * rows * s.dModel * (4 * s.dModel + 2 * s.dMlp) +
    2 * 2 * batch * seq * seq * s.dModel;
  return s.nLayers * perLayer + 2 * rows * s.dModel * s.dVocab;
}

/**
 * A fingerprint of a logits tensor [batch, seq, vocab] that does not depend on weight
 * processing: every value is taken after subtracting the mean over the vocabulary (a
 * TransformerLens-processed model's logits equal the raw model's minus that mean).
 */
export interface LogitsChecksum {
  /** Centred logits[0, -1, :5]. */
  last5: number[];
  /** Centred logits[batch - 1, -1, :5]. */
  lastRow5: number[];
  /** argmax of logits[0, -1, :]. */
  argmaxLast: number;
  /** Mean over all positions and the vocabulary of |logits - mean over the vocabulary|. */
  meanAbs: number;
}

/** Timing and checksum of one input size. */
export interface ForwardRun {
  batch: number;
  seq: number;
  /** Median wall time of the timed runs (after one warm-up), seconds. */
  seconds: number;
  allSeconds: number[];
  /** {@link forwardFlops} of this size. */
  flops: number;
  /** flops / seconds / 1e9. */
  gflops: number;
  checksum: LogitsChecksum;
}

/** What `forward` mode prints (both harnesses). Runs are keyed "1x101" and "30x101". */
export interface ForwardResult {
  peer: string;
  mode: "forward";
  threads: number;
  runs: Record<string, ForwardRun>;
  [extra: string]: unknown;
}

/** One measurement of one matmul shape. */
export interface MatmulTiming {
  /** Median seconds per product. */
  seconds: number;
  /** 2 m k n / median seconds / 1e9. */
  gflops: number;
  /** 2 m k n / fastest seconds / 1e9 (less sensitive to other load on the machine). */
  bestGflops: number;
}

/**
 * One shape of `sgemm` (PyTorch: keys `torch1`, `torch2`, `numpy1`, `numpy2`, by library and
 * thread count) or `matmul` (TensorFlow.js: key `tfjs`).
 */
export interface MatmulShapeResult {
  m: number;
  k: number;
  n: number;
  flops: number;
  [key: string]: MatmulTiming | number;
}

/** What `sgemm` (PyTorch) and `matmul` (TensorFlow.js) modes print. */
export interface MatmulResult {
  peer: string;
  mode: "sgemm" | "matmul";
  shapes: MatmulShapeResult[];
  [extra: string]: unknown;
}

/** The tokens file every harness reads: `[BOS] + r + r` rows, seeded. */
export interface BenchTokens {
  /** Seed of the random ids. */
  seed: number;
  /** Length of r (50: 101 positions). */
  seqLen: number;
  /** The BOS id (d_vocab - 1 for GPT-2). */
  bos: number;
  /** Vocabulary the ids were drawn from. */
  dVocab: number;
  /** [batch][1 + 2 seqLen] ids; the 1 x 101 runs use row 0. */
  tokens: number[][];
}

/** Reads and checks a tokens file written by `bench/model_file.ts`. */
export async function readBenchTokens(path: string): Promise<BenchTokens> {
  const spec = JSON.parse(await Deno.readTextFile(path)) as BenchTokens;
  const T = 1 + 2 * spec.seqLen;
  if (!Array.isArray(spec.tokens) || spec.tokens.some((r) => r.length !== T)) {
    throw new Error(`${path}: tokens must be rows of 1 + 2 x seqLen = ${T} ids`);
  }
  return spec;
}

/**
 * The {@link LogitsChecksum} of logits [batch, seq, vocab], read one sequence at a time by
 * `row(b)` (a Float32Array of seq x vocab values), accumulating in float64.
 */
export async function logitsChecksum(
  row: (b: number) => Float32Array | Promise<Float32Array>,
  batch: number,
  seq: number,
  vocab: number,
): Promise<LogitsChecksum> {
  let absSum = 0;
  let last5: number[] = [];
  let lastRow5: number[] = [];
  let argmaxLast = -1;
  for (let b = 0; b < batch; b++) {
    const x = await row(b);
    for (let t = 0; t < seq; t++) {
      const o = t * vocab;
      let mean = 0;
      for (let v = 0; v < vocab; v++) mean += x[o + v];
      mean /= vocab;
      let s = 0;
      for (let v = 0; v < vocab; v++) s += Math.abs(x[o + v] - mean);
      absSum += s / vocab;
      if (t === seq - 1) {
        const five = Array.from(x.subarray(o, o + 5), (v) => round(v - mean, 5));
        if (b === 0) {
          last5 = five;
          let best = 0;
          for (let v = 1; v < vocab; v++) if (x[o + v] > x[o + best]) best = v;
          argmaxLast = best;
        }
        if (b === batch - 1) lastRow5 = five;
      }
    }
  }
  return { last5, lastRow5, argmaxLast, meanAbs: round(absSum / (batch * seq), 6) };
}

/** Rounds to `digits` decimals (for compact JSON). */
export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** The median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
