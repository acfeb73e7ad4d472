/**
 * Matmul throughput on GPT-2-small shapes, for the relaxed-SIMD and plain-SIMD builds.
 *
 *   deno run -A bench/matmul_bench.ts     prints a GFLOP/s table
 *   deno bench -A bench/matmul_bench.ts   the same shapes as Deno.bench cases
 *
 * GFLOP/s counts 2*m*k*n floating-point operations per matmul.
 * @module
 */
import { Kernels, relaxedSimdSupported } from "../kernels/kernels.ts";

/** [m, k, n]: activations [m, k] times weights [k, n]. */
export const SHAPES: [number, number, number][] = [
  [101, 768, 2304], // attention c_attn, one sequence of 101 tokens
  [101, 768, 3072], // mlp c_fc
  [101, 768, 50257], // unembed
  [3030, 768, 2304], // c_attn for a batch of 30 x 101
];

interface Setup {
  kn: Kernels;
  run: () => void;
}

function fill(kn: Kernels, ptr: number, n: number, seed: number): void {
  const v = kn.view(ptr, n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    v[i] = s / 4294967296 - 0.5;
  }
}

function setup(kn: Kernels, [m, k, n]: [number, number, number]): Setup {
  const a = kn.alloc(m * k), c = kn.alloc(m * n), bias = kn.alloc(n);
  const raw = kn.alloc(k * n), packed = kn.alloc(kn.packedSize(k, n));
  fill(kn, a, m * k, 1);
  fill(kn, raw, k * n, 2);
  fill(kn, bias, n, 3);
  kn.packB(raw, packed, k, n);
  return { kn, run: () => kn.matmul(a, packed, c, m, k, n, { bias }) };
}

async function builds(): Promise<{ name: string; relaxed: boolean }[]> {
  const out = [];
  if (await relaxedSimdSupported()) out.push({ name: "relaxed", relaxed: true });
  out.push({ name: "simd", relaxed: false });
  return out;
}

async function report(): Promise<void> {
  console.log(`matmul GFLOP/s (single thread), ${navigator.hardwareConcurrency} cores available`);
  console.log("build    shape                     GFLOP/s   ms/call");
  for (const b of await builds()) {
    for (const shape of SHAPES) {
      const kn = await Kernels.load({ relaxedSimd: b.relaxed });
      const { run } = setup(kn, shape);
      const flop = 2 * shape[0] * shape[1] * shape[2];
      run(); // warm-up (tier-up, page faults)
      let reps = 0;
      const t0 = performance.now();
      let t = 0;
      do {
        run();
        reps++;
        t = performance.now() - t0;
      } while (t < 1500 || reps < 3);
      const ms = t / reps;
      const name = `${shape[0]}x${shape[1]} @ ${shape[1]}x${shape[2]}`;
      console.log(
        `${b.name.padEnd(8)} ${name.padEnd(25)} ${(flop / ms / 1e6).toFixed(1).padStart(7)} ` +
          `${ms.toFixed(2).padStart(9)}`,
      );
    }
  }
}

if (import.meta.main) {
  await report();
} else {
  for (const b of await builds()) {
    for (const shape of SHAPES) {
      const kn = await Kernels.load({ relaxedSimd: b.relaxed });
      const { run } = setup(kn, shape);
      Deno.bench({
        name: `matmul ${b.name} ${shape[0]}x${shape[1]}x${shape[2]}`,
        group: `${shape[0]}x${shape[1]}x${shape[2]}`,
        fn: run,
      });
    }
  }
}
