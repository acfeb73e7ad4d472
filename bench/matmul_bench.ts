/**
 * Matmul throughput on GPT-2-small shapes, for the relaxed-SIMD and plain-SIMD builds, on one
 * thread and on two (worker threads over the shared memory), plus GPT-2-small attention.
 *
 *   deno run -A bench/matmul_bench.ts     prints a table
 *   deno bench -A bench/matmul_bench.ts   the same cases as Deno.bench cases
 *
 * GFLOP/s counts 2*m*k*n floating-point operations per matmul. The table shows the best and
 * the mean of repeated calls: on a shared machine the best is the kernel's speed, the mean
 * includes interference from other processes.
 * @module
 */
import { Kernels, relaxedSimdSupported } from "../backend/wasm/kernels.ts";

/** [m, k, n]: activations [m, k] times weights [k, n]. */
export const SHAPES: [number, number, number][] = [
  [101, 768, 2304], // attention c_attn, one sequence of 101 tokens
  [101, 768, 3072], // mlp c_fc
  [101, 768, 50257], // unembed
  [3030, 768, 2304], // c_attn for a batch of 30 x 101
];

/** Thread counts to measure. */
export const THREADS = [1, 2];

function fill(kn: Kernels, ptr: number, n: number, seed: number): void {
  const v = kn.view(ptr, n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    v[i] = s / 4294967296 - 0.5;
  }
}

function setupMatmul(kn: Kernels, [m, k, n]: [number, number, number]): () => void {
  const a = kn.alloc(m * k), c = kn.alloc(m * n), bias = kn.alloc(n);
  const packed = kn.alloc(kn.packedSize(k, n));
  fill(kn, a, m * k, 1);
  fill(kn, bias, n, 3);
  const mark = kn.mark();
  const raw = kn.alloc(k * n);
  fill(kn, raw, k * n, 2);
  kn.packB(raw, packed, k, n);
  kn.release(mark);
  return () => kn.matmul(a, packed, c, m, k, n, { bias });
}

/** GPT-2 small attention for one sequence: 12 heads, d_head 64, 101 positions. */
function setupAttention(kn: Kernels, withPattern: boolean): () => void {
  const T = 101, H = 12, D = 64, dm = H * D;
  const qkv = kn.alloc(T * 3 * dm), z = kn.alloc(T * dm), pattern = kn.alloc(H * T * T);
  fill(kn, qkv, T * 3 * dm, 4);
  const args = {
    q: qkv,
    k: qkv + dm * 4,
    v: qkv + 2 * dm * 4,
    stride: 3 * dm,
    z,
    zStride: dm,
    nQ: T,
    qStart: 0,
    nHeads: H,
    dHead: D,
    scale: 1 / 8,
    pattern: withPattern ? pattern : undefined,
  };
  return () => kn.attention(args);
}

async function builds(): Promise<{ name: string; relaxed: boolean }[]> {
  const out = [];
  if (await relaxedSimdSupported()) out.push({ name: "relaxed", relaxed: true });
  out.push({ name: "simd", relaxed: false });
  return out;
}

/** Best and mean milliseconds per call over at least `minMs` of calls (after a warm-up call). */
function time(run: () => void, minMs: number): { best: number; mean: number } {
  run();
  let best = Infinity, reps = 0;
  const t0 = performance.now();
  let t = t0;
  do {
    const s = performance.now();
    run();
    t = performance.now();
    best = Math.min(best, t - s);
    reps++;
  } while (t - t0 < minMs || reps < 3);
  return { best, mean: (t - t0) / reps };
}

async function report(): Promise<void> {
  console.log(`matmul GFLOP/s, ${navigator.hardwareConcurrency} cores available`);
  console.log("build    threads  shape                       best   mean  ms/call(best)");
  for (const b of await builds()) {
    for (const threads of THREADS) {
      const kn = await Kernels.load({ relaxedSimd: b.relaxed, threads });
      for (const shape of SHAPES) {
        const mark = kn.mark();
        const { best, mean } = time(setupMatmul(kn, shape), 1500);
        kn.release(mark);
        const flop = 2 * shape[0] * shape[1] * shape[2];
        const name = `${shape[0]}x${shape[1]} @ ${shape[1]}x${shape[2]}`;
        console.log(
          `${b.name.padEnd(8)} ${String(threads).padStart(7)}  ${name.padEnd(25)} ` +
            `${(flop / best / 1e6).toFixed(1).padStart(6)} ${
              (flop / mean / 1e6).toFixed(1).padStart(6)
            }` +
            `  ${best.toFixed(2).padStart(8)}`,
        );
      }
      for (const withPattern of [false, true]) {
        const mark = kn.mark();
        const { best, mean } = time(setupAttention(kn, withPattern), 700);
        kn.release(mark);
        const name = `attention 101 pos x 12 heads${withPattern ? " +pattern" : ""}`;
        console.log(
          `${b.name.padEnd(8)} ${String(threads).padStart(7)}  ${name.padEnd(38)} ` +
            `best ${(best * 1000).toFixed(0)} us, mean ${(mean * 1000).toFixed(0)} us`,
        );
      }
      kn.close();
    }
  }
}

if (import.meta.main) {
  await report();
} else {
  for (const b of await builds()) {
    for (const threads of THREADS) {
      const kn = await Kernels.load({ relaxedSimd: b.relaxed, threads });
      for (const shape of SHAPES) {
        Deno.bench({
          name: `matmul ${b.name} ${threads}t ${shape[0]}x${shape[1]}x${shape[2]}`,
          group: `${shape[0]}x${shape[1]}x${shape[2]}`,
          fn: setupMatmul(kn, shape),
        });
      }
      Deno.bench({
        name: `attention ${b.name} ${threads}t 101x12x64`,
        group: "attention",
        fn: setupAttention(kn, false),
      });
    }
  }
}
