/**
 * The shared benchmark inputs: a GPT-2-small-shape HF checkpoint with seeded random weights
 * (`config.json` + `model.safetensors`, about 0.5 GB, official `gpt2` layout) and a tokens file
 * of seeded `[BOS] + r + r` rows. Every peer (this library, PyTorch, TensorFlow.js) reads the same
 * two files, so their logits can be compared.
 *
 *   deno run --allow-read --allow-write --allow-env bench/model_file.ts [DIR] [--seed N]
 *
 * writes both into DIR (default {@link defaultBenchDir}) and prints their paths as JSON.
 * @module
 */
import { SeededRng } from "../core/rng.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";
import type { BenchTokens } from "./peers/common.ts";

export type { BenchTokens } from "./peers/common.ts";

/** GPT-2 small's shape. */
export const BENCH_SHAPE = {
  nLayers: 12,
  nHeads: 12,
  dModel: 768,
  dMlp: 3072,
  dVocab: 50257,
  nCtx: 1024,
} as const;

/** The study's sizes: r of 50 ids (101 positions), 30 rows. */
export const BENCH_SEQ_LEN = 50;
export const BENCH_BATCH = 30;

/** Bump when the file contents for a given seed change, so caches are rewritten. */
const FORMAT = 1;

/** Paths of the benchmark inputs. */
export interface BenchModel {
  /** Directory holding `config.json` and `model.safetensors`. */
  dir: string;
  configPath: string;
  weightsPath: string;
  /** The tokens file (`tokens.json`, {@link BenchTokens}). */
  tokensPath: string;
  seed: number;
  /** True when the files were already there for this seed and were reused. */
  reused: boolean;
}

/**
 * Where the benchmark model is cached: `$TL_BENCH_DIR`, else
 * `$XDG_CACHE_HOME/transformer-lens-deno/bench`, else `~/.cache/transformer-lens-deno/bench`,
 * else the system temporary directory.
 */
export function defaultBenchDir(): string {
  const env = (k: string) => {
    try {
      return Deno.env.get(k);
    } catch {
      return undefined;
    }
  };
  const explicit = env("TL_BENCH_DIR");
  if (explicit) return explicit;
  const cache = env("XDG_CACHE_HOME") ?? (env("HOME") ? `${env("HOME")}/.cache` : undefined);
  if (cache) return `${cache}/transformer-lens-deno/bench`;
  return `${env("TMPDIR") ?? "/tmp"}/transformer-lens-deno-bench`;
}

/**
 * The benchmark tokens: `batch` rows of `[BOS] + r + r`, r = `seqLen` ids drawn uniformly from
 * [0, d_vocab) with `SeededRng(seed, "repeated-tokens")`, row by row, so row b does not depend on
 * `batch` (the same definition as the study's repeated tokens, docs/semantics.md section 4).
 *
 * @example
 * ```ts
 * import { benchTokens } from "./model_file.ts";
 * const t = benchTokens(0);
 * t.tokens.length; // 30
 * t.tokens[0].length; // 101
 * ```
 */
export function benchTokens(
  seed = 0,
  batch: number = BENCH_BATCH,
  seqLen: number = BENCH_SEQ_LEN,
): BenchTokens {
  const dVocab = BENCH_SHAPE.dVocab;
  const bos = dVocab - 1;
  const rng = new SeededRng(seed, "repeated-tokens");
  const tokens: number[][] = [];
  for (let b = 0; b < batch; b++) {
    const r = Array.from({ length: seqLen }, () => rng.int(dVocab));
    tokens.push([bos, ...r, ...r]);
  }
  return { seed, seqLen, bos, dVocab, tokens };
}

async function exists(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * Writes (or reuses) the benchmark model and tokens in `dir`: `config.json`, `model.safetensors`
 * (GPT-2-small shape, seeded random weights from `syntheticGpt2`, official layout, F32) and
 * `tokens.json` ({@link benchTokens} of the same seed). A stamp file records the seed; when it
 * matches and the files are complete they are reused (generating takes a few seconds and 0.5 GB).
 * Files are written under temporary names and renamed, so an interrupted run leaves no half file.
 *
 * @example
 * ```ts ignore
 * import { writeBenchModel } from "./model_file.ts";
 * const m = await writeBenchModel("/tmp/bench-model", 0);
 * m.weightsPath; // "/tmp/bench-model/model.safetensors"
 * ```
 */
export async function writeBenchModel(dir: string, seed = 0): Promise<BenchModel> {
  const configPath = `${dir}/config.json`;
  const weightsPath = `${dir}/model.safetensors`;
  const tokensPath = `${dir}/tokens.json`;
  const stampPath = `${dir}/bench-model.json`;
  const paths = { dir, configPath, weightsPath, tokensPath, seed };

  if (await exists(stampPath)) {
    try {
      const old = JSON.parse(await Deno.readTextFile(stampPath));
      const info = await exists(weightsPath);
      const ok = old.format === FORMAT && old.seed === seed &&
        JSON.stringify(old.shape) === JSON.stringify(BENCH_SHAPE) &&
        info?.size === old.bytes && await exists(configPath) !== null &&
        await exists(tokensPath) !== null;
      if (ok) return { ...paths, reused: true };
    } catch {
      // an unreadable stamp: write everything again
    }
  }

  await Deno.mkdir(dir, { recursive: true });
  await Deno.remove(stampPath).catch(() => {});
  const { config, weights } = syntheticGpt2({ ...BENCH_SHAPE, seed, layout: "official" });
  const write = async (path: string, data: Uint8Array | string) => {
    const tmp = `${path}.tmp-${Deno.pid}`;
    if (typeof data === "string") await Deno.writeTextFile(tmp, data);
    else await Deno.writeFile(tmp, data);
    await Deno.rename(tmp, path);
  };
  await write(weightsPath, weights);
  await write(configPath, JSON.stringify(config, null, 2) + "\n");
  await write(tokensPath, JSON.stringify(benchTokens(seed)) + "\n");
  const stamp = { format: FORMAT, seed, shape: BENCH_SHAPE, bytes: weights.byteLength };
  await write(stampPath, JSON.stringify(stamp) + "\n");
  return { ...paths, reused: false };
}

if (import.meta.main) {
  const args = [...Deno.args];
  const i = args.indexOf("--seed");
  const seed = i >= 0 ? Number(args.splice(i, 2)[1]) : 0;
  const dir = args[0] ?? defaultBenchDir();
  const t0 = performance.now();
  const m = await writeBenchModel(dir, seed);
  console.log(JSON.stringify({ ...m, seconds: (performance.now() - t0) / 1000 }));
}
