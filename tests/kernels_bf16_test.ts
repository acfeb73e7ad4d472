/**
 * The bf16 packed-B matmul, for both builds (relaxed SIMD and plain SIMD).
 *
 * packBBf16 must round each f32 to the nearest bfloat16 (ties to even), computed here
 * independently in float64. The bf16 matmul must equal a float64 reference computed from the
 * bf16-rounded B within the float32 accumulation bound (k + 2) * 2^-24 * sum |a_i b_i| (see
 * kernels_test.ts), and, since it widens bf16 to f32 in registers and then runs the f32 kernel's
 * arithmetic, equal the f32 matmul over the rounded B bit for bit; 1 and 2 threads bit-identical.
 */
import assert from "node:assert/strict";
import { KernelError } from "../core/errors.ts";
import { Kernels, relaxedSimdSupported } from "../backend/wasm/kernels.ts";
import { SeededRng } from "../core/rng.ts";
import { bitsEqual } from "./assertions.ts";

const U = 2 ** -24;

function randn(n: number, seed: number, sd = 1): Float32Array<ArrayBuffer> {
  // The project's seeded generator (weights/synthetic.ts), so tests share one PRNG.
  const r = new SeededRng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = sd * r.normal();
  return out;
}

/** Nearest bfloat16 (8 significant bits), ties to even, by float64 arithmetic (finite x). */
function bf16Ref(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const f = Math.fround(x);
  const e = Math.floor(Math.log2(Math.abs(f)));
  const ulp = 2 ** (Math.max(e, -126) - 7);
  const q = f / ulp; // exact: f has 24 bits, ulp is a power of two
  const lo = Math.floor(q), frac = q - lo;
  const r = frac > 0.5 || (frac === 0.5 && lo % 2 !== 0) ? lo + 1 : lo;
  return Math.fround(r * ulp);
}

const relaxedOk = await relaxedSimdSupported();
const builds = [
  { name: "relaxed", relaxed: true, ignore: !relaxedOk },
  { name: "simd", relaxed: false, ignore: false },
];
/** [m, k, n]: odd shapes, edge tiles, a lone last row, k past the k-block (1024). */
const shapes: [number, number, number][] = [
  [1, 1, 1],
  [3, 5, 7],
  [4, 8, 8],
  [5, 17, 13],
  [9, 33, 65],
  [101, 64, 200],
  [130, 1030, 37],
  [33, 257, 1001],
];

Deno.test("packBBf16 rounds to nearest even, with NaN, infinities, subnormals and overflow", async () => {
  const kn = await Kernels.load({ threads: 1 });
  const f = new Float32Array([
    1,
    -1,
    1 + 2 ** -8, // tie between 1 and 1 + 2^-7: even is 1
    1 + 3 * 2 ** -8, // tie: even is 1 + 2^-6
    1 + 2 ** -8 + 2 ** -20, // above the tie: up
    3.4028234663852886e38, // max f32 rounds to +inf in bf16
    -Infinity,
    Infinity,
    1e-40, // subnormal
    -0,
    NaN,
    0.1,
  ]);
  const n = f.length;
  const packed = kn.uploadPacked(f, 1, n, "bf16");
  const back = kn.downloadPacked(packed, 1, n, "bf16");
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(f[i])) assert.ok(Number.isNaN(back[i]), "NaN stays NaN");
    else if (i === 5) assert.equal(back[i], Infinity);
    else assert.ok(Object.is(back[i], bf16Ref(f[i])), `${f[i]}: got ${back[i]}`);
  }
  assert.equal(back[2], 1);
  assert.equal(back[3], 1 + 2 ** -6);
  assert.equal(back[4], 1 + 2 ** -7);
  // Random values: every one the float64 reference rounding.
  const r = randn(17 * 241, 7, 3);
  const rb = kn.downloadPacked(kn.uploadPacked(r, 17, 241, "bf16"), 17, 241, "bf16");
  for (let i = 0; i < rb.length; i++) assert.equal(rb[i], bf16Ref(r[i]), `random ${i}`);
  assert.equal(kn.packedSizeBf16(5, 13), kn.packedSize(5, 13) / 2);
  kn.close();
});

for (const build of builds) {
  Deno.test(`[${build.name}] bf16 matmul vs float64 reference on the rounded B, odd shapes`, {
    ignore: build.ignore,
  }, async () => {
    const kn = await Kernels.load({ relaxedSimd: build.relaxed, threads: 1 });
    for (const [m, k, n] of shapes) {
      const mark = kn.mark();
      const A = randn(m * k, m + 3 * k + 7 * n);
      const B = randn(k * n, 11 * m + k + n, 0.5);
      const Br = B.map(bf16Ref);
      const bias = randn(n, 5 * n);
      const a = kn.alloc(m * k), c = kn.alloc(m * n), biasP = kn.alloc(n);
      kn.write(a, A);
      kn.write(biasP, bias);
      const packed = kn.uploadPacked(B, k, n, "bf16");
      kn.matmul(a, packed, c, m, k, n, { bias: biasP, bDtype: "bf16" });
      const got = kn.read(c, m * n);
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = bias[j], mag = Math.abs(bias[j]);
          for (let t = 0; t < k; t++) {
            const p = A[i * k + t] * Br[t * n + j];
            s += p;
            mag += Math.abs(p);
          }
          const tol = (k + 2) * U * mag;
          const g = got[i * n + j];
          if (!(Math.abs(g - s) <= tol)) {
            assert.fail(`${m}x${k}x${n} [${i},${j}]: got ${g}, want ${s} (tol ${tol})`);
          }
        }
      }
      // Bit for bit the f32 kernel over the rounded B (same arithmetic after widening).
      const c2 = kn.alloc(m * n);
      kn.matmul(a, kn.uploadPacked(Br, k, n), c2, m, k, n, { bias: biasP });
      bitsEqual(got, kn.read(c2, m * n), `${m}x${k}x${n} bf16 vs f32 of rounded B`);
      kn.release(mark);
    }
    kn.close();
  });

  Deno.test(
    `[${build.name}] bf16 matmul: 1 and 2 threads bit-identical (panels, rows, accumulate)`,
    {
      ignore: build.ignore,
    },
    async () => {
      const one = await Kernels.load({ relaxedSimd: build.relaxed, threads: 1 });
      const two = await Kernels.load({ relaxedSimd: build.relaxed, threads: 2 });
      // Wide n splits by panels; tall m with few panels splits by rows.
      for (
        const [m, k, n] of [[101, 768, 2304], [400, 1030, 24], [1, 1280, 5000], [37, 129, 1003]]
      ) {
        const A = randn(m * k, m * k), B = randn(k * n, k + n, 0.05), C0 = randn(m * n, m + n);
        const out: Float32Array[] = [];
        for (const kn of [one, two]) {
          const mark = kn.mark();
          const a = kn.alloc(m * k), c = kn.alloc(m * n);
          kn.write(a, A);
          kn.write(c, C0);
          const packed = kn.uploadPacked(B, k, n, "bf16");
          kn.matmul(a, packed, c, m, k, n, { bDtype: "bf16", accumulate: true });
          out.push(kn.read(c, m * n));
          kn.release(mark);
        }
        bitsEqual(out[0], out[1], `${m}x${k}x${n} 1 vs 2 threads`);
      }
      one.close();
      two.close();
    },
  );
}

Deno.test("matmul rejects an unknown bDtype", async () => {
  const kn = await Kernels.load({ threads: 1 });
  const a = kn.alloc(4), b = kn.alloc(kn.packedSize(2, 2)), c = kn.alloc(4);
  assert.throws(
    () => kn.matmul(a, b, c, 2, 2, 2, { bDtype: "f16" as "bf16" }),
    KernelError,
  );
  kn.close();
});
