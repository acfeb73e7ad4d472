/**
 * The kernels Gemma adds, through the `Backend` interface (what a second backend implements too):
 * the sliding window and the score softcap of the attention ops, forward (fused and three-step)
 * and backward; `headRmsNorm` (q_norm / k_norm) and its backward; `softcap` and its backward.
 * Each against a float64 reference on seeded random inputs, for both builds, bit-identical on 1
 * and 2 threads, and bad arguments refused with a KernelError.
 *
 * Tolerances: the elementwise kernels compute in float64 and round once, so they are within 2
 * float32 roundings (2 x 2^-24 relative). Attention accumulates in float32 over at most 64 keys
 * of dHead 32 with scores of magnitude <= 8: 2e-5 absolute on z and patterns (measured ~1e-6),
 * 1e-4 relative to the largest gradient entry for the backward (measured ~1e-6). A missing
 * window moves patterns by ~1e-1, a missing cap's derivative the gradients by ~1e-1.
 */
import assert from "node:assert/strict";
import type { AttentionArgs, Backend, DeviceArray } from "../backend/backend.ts";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { relaxedSimdSupported } from "../backend/wasm/kernels.ts";
import { KernelError } from "../core/errors.ts";
import { SeededRng } from "../core/rng.ts";

const U = 2 ** -24;
const relaxedOk = await relaxedSimdSupported();
const builds = [{ name: "relaxed", relaxed: true }, { name: "simd", relaxed: false }];

function randn(n: number, rng: SeededRng, sd = 1): Float32Array {
  return Float32Array.from({ length: n }, () => sd * rng.normal());
}

/** One sequence's attention problem: fused rows [T, (H + 2 KV) D]. */
interface Problem {
  T: number;
  H: number;
  KV: number;
  D: number;
  qkv: Float32Array;
  scale: number;
  window: number;
  softcap: number;
  kStart: number;
}

function problem(seed: number, p: Omit<Problem, "qkv">): Problem {
  const rng = new SeededRng(seed, "kernels_gemma");
  return { ...p, qkv: randn(p.T * (p.H + 2 * p.KV) * p.D, rng) };
}

/** float64 reference: pattern [H, nQ, T] and z [nQ, H D] for queries qStart.. T - 1. */
function reference(p: Problem, qStart: number) {
  const { T, H, KV, D } = p, W = (H + 2 * KV) * D, group = H / KV, nQ = T - qStart;
  const pattern = new Float64Array(H * nQ * T), z = new Float64Array(nQ * H * D);
  for (let h = 0; h < H; h++) {
    const kc = H * D + Math.floor(h / group) * D, vc = (H + KV) * D + Math.floor(h / group) * D;
    for (let i = 0; i < nQ; i++) {
      const qpos = qStart + i;
      const lo = Math.max(p.kStart, p.window ? qpos - p.window + 1 : 0);
      const s: number[] = [];
      for (let j = lo; j <= qpos; j++) {
        let dot = 0;
        for (let e = 0; e < D; e++) dot += p.qkv[qpos * W + h * D + e] * p.qkv[j * W + kc + e];
        const raw = dot * p.scale;
        s.push(p.softcap ? p.softcap * Math.tanh(raw / p.softcap) : raw);
      }
      if (!s.length) continue;
      const m = Math.max(...s);
      const e = s.map((x) => Math.exp(x - m));
      const sum = e.reduce((a, b) => a + b);
      e.forEach((x, t) => {
        const j = lo + t, pj = x / sum;
        pattern[(h * nQ + i) * T + j] = pj;
        for (let c = 0; c < D; c++) z[i * H * D + h * D + c] += pj * p.qkv[j * W + vc + c];
      });
    }
  }
  return { pattern, z };
}

function args(p: Problem, qkv: DeviceArray, z: DeviceArray, qStart: number): AttentionArgs {
  const W = (p.H + 2 * p.KV) * p.D;
  return {
    q: qkv.at(qStart * W),
    k: qkv.at(p.H * p.D),
    v: qkv.at((p.H + p.KV) * p.D),
    stride: W,
    z,
    zStride: p.H * p.D,
    nQ: p.T - qStart,
    qStart,
    nHeads: p.H,
    dHead: p.D,
    scale: p.scale,
    nKeyValueHeads: p.KV,
    kStart: p.kStart,
    window: p.window,
    softcap: p.softcap,
  };
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const CASES = [
  { T: 64, H: 4, KV: 2, D: 32, scale: 0.2, window: 5, softcap: 3, kStart: 0 },
  { T: 64, H: 4, KV: 1, D: 24, scale: 0.3, window: 16, softcap: 0, kStart: 3 },
  { T: 20, H: 2, KV: 2, D: 16, scale: 0.25, window: 1, softcap: 50, kStart: 0 },
  { T: 20, H: 2, KV: 2, D: 16, scale: 0.25, window: 0, softcap: 2, kStart: 2 },
];

/** Runs fused and three-step attention; returns z and pattern of each. */
async function runAttention(backend: Backend, p: Problem, qStart: number) {
  using scope = backend.scope();
  const qkv = scope.upload(p.qkv);
  const nQ = p.T - qStart, size = p.H * nQ * p.T;
  const z1 = scope.alloc(nQ * p.H * p.D), z2 = scope.alloc(nQ * p.H * p.D);
  const pat1 = scope.alloc(size), scores = scope.alloc(size), pat2 = scope.alloc(size);
  backend.attention(args(p, qkv, z1, qStart), pat1);
  const a2 = args(p, qkv, z2, qStart);
  backend.attentionScores(a2, scores);
  const sc = await backend.read(scores);
  backend.softmaxRows(scores, pat2, p.H, nQ, qStart, { kStart: p.kStart, window: p.window });
  backend.attentionApply(a2, pat2);
  return {
    z: await backend.read(z1),
    pattern: await backend.read(pat1),
    z3: await backend.read(z2),
    pattern3: await backend.read(pat2),
    scores: sc,
  };
}

for (const build of builds) {
  const ignore = build.relaxed && !relaxedOk;
  Deno.test(`[${build.name}] attention with a window and a softcap matches float64`, {
    ignore,
  }, async () => {
    const one = await WasmBackend.load({ threads: 1, relaxedSimd: build.relaxed });
    const two = await WasmBackend.load({ threads: 2, relaxedSimd: build.relaxed });
    try {
      for (const [c, spec] of CASES.entries()) {
        const p = problem(c, spec);
        for (const qStart of [0, 9]) {
          const what = `case ${c}, qStart ${qStart}`;
          const ref = reference(p, qStart);
          const a = await runAttention(one, p, qStart), b = await runAttention(two, p, qStart);
          assert.ok(maxDiff(a.z, ref.z) < 2e-5, `${what}: z ${maxDiff(a.z, ref.z)}`);
          assert.ok(maxDiff(a.pattern, ref.pattern) < 2e-5, `${what}: pattern`);
          // The fused and three-step paths give the same bits, as do 1 and 2 threads.
          assert.deepEqual(a.z3, a.z, `${what}: three-step z`);
          assert.deepEqual(a.pattern3, a.pattern, `${what}: three-step pattern`);
          assert.deepEqual(b, a, `${what}: 2 threads`);
          // Scores outside the window are -Infinity; inside, capped ones are within the cap.
          const nQ = p.T - qStart;
          for (let h = 0; h < p.H; h++) {
            for (let i = 0; i < nQ; i++) {
              const qpos = qStart + i;
              for (let j = 0; j < p.T; j++) {
                const s = a.scores[(h * nQ + i) * p.T + j];
                const seen = j <= qpos && j >= p.kStart && (!p.window || j > qpos - p.window);
                assert.equal(Number.isFinite(s), seen, `${what}: score ${h} ${i} ${j}`);
                if (seen && p.softcap) assert.ok(Math.abs(s) <= p.softcap);
              }
            }
          }
        }
      }
    } finally {
      one.close();
      two.close();
    }
  });

  Deno.test(`[${build.name}] attention backward through the window and the softcap`, {
    ignore,
  }, async () => {
    const one = await WasmBackend.load({ threads: 1, relaxedSimd: build.relaxed });
    const two = await WasmBackend.load({ threads: 2, relaxedSimd: build.relaxed });
    try {
      for (const [c, spec] of CASES.entries()) {
        const p = problem(100 + c, spec);
        const G = randn(p.T * p.H * p.D, new SeededRng(200 + c, "kernels_gemma"));
        const ref = gradReference(p, G);
        const a = await runBackward(one, p, G), b = await runBackward(two, p, G);
        const scale = Math.max(...ref.map(Math.abs));
        const err = maxDiff(a, ref);
        assert.ok(err < 1e-4 * scale, `case ${c}: dqkv ${err} (scale ${scale})`);
        assert.deepEqual(b, a, `case ${c}: 2 threads`);
      }
    } finally {
      one.close();
      two.close();
    }
  });

  Deno.test(`[${build.name}] headRmsNorm, softcap and their backwards match float64`, {
    ignore,
  }, async () => {
    const one = await WasmBackend.load({ threads: 1, relaxedSimd: build.relaxed });
    const two = await WasmBackend.load({ threads: 2, relaxedSimd: build.relaxed });
    try {
      const rng = new SeededRng(7, "kernels_gemma");
      const rows = 300, heads = 3, D = 24, stride = heads * D + 8, eps = 1e-6;
      const x = randn(rows * stride, rng, 2), w = randn(heads * D, rng, 0.5);
      const g = randn(rows * stride, rng);
      const results = [];
      for (const backend of [one, two]) {
        using scope = backend.scope();
        const xs = scope.upload(x), ws = scope.upload(w), scale = scope.alloc(rows * heads);
        backend.headRmsNorm(xs, ws, { rows, stride, nHeads: heads, dHead: D }, eps, { scale });
        const y = await backend.read(xs);
        const x0 = scope.upload(x), gs = scope.upload(g);
        backend.headRmsNormBackward(x0, gs, ws, {
          rows,
          stride,
          gradStride: stride,
          nHeads: heads,
          dHead: D,
        }, eps);
        results.push({ y, s: await backend.read(scale), dx: await backend.read(gs) });
      }
      assert.deepEqual(results[1], results[0], "2 threads");
      const { y, s, dx } = results[0];
      for (let r = 0; r < rows; r++) {
        for (let h = 0; h < heads; h++) {
          const o = r * stride + h * D;
          let ss = 0;
          for (let e = 0; e < D; e++) ss += x[o + e] ** 2;
          const sc = Math.sqrt(ss / D + eps);
          assert.ok(Math.abs(s[r * heads + h] - sc) <= 2 * U * sc);
          let dot = 0;
          for (let e = 0; e < D; e++) dot += g[o + e] * w[h * D + e] * x[o + e];
          for (let e = 0; e < D; e++) {
            const want = (x[o + e] / sc) * w[h * D + e];
            assert.ok(Math.abs(y[o + e] - want) <= 2 * U * Math.abs(want) + 1e-45, "y");
            const dWant = (g[o + e] * w[h * D + e]) / sc - (dot * x[o + e]) / (D * sc ** 3);
            assert.ok(Math.abs(dx[o + e] - dWant) <= 1e-6 * (Math.abs(dWant) + 1e-3), "dx");
          }
        }
        // The 8 columns past the heads are untouched.
        for (let e = heads * D; e < stride; e++) assert.equal(y[r * stride + e], x[r * stride + e]);
      }

      const n = 70000, cap = 2.5;
      const v = randn(n, rng, 8), dy = randn(n, rng);
      const caps = [];
      for (const backend of [one, two]) {
        using scope = backend.scope();
        const vs = scope.upload(v), out = scope.alloc(n), d = scope.upload(dy);
        backend.softcap(vs, out, cap);
        backend.softcapBackward(vs, d, d, cap);
        caps.push({ y: await backend.read(out), dx: await backend.read(d) });
      }
      const [c1, c2] = caps;
      assert.deepEqual(c2, c1, "softcap on 2 threads");
      for (let i = 0; i < n; i++) {
        const t = Math.tanh(v[i] / cap);
        assert.ok(Math.abs(c1.y[i] - cap * t) <= 2 * U * Math.abs(cap * t) + 1e-45, "softcap");
        const want = dy[i] * (1 - t * t);
        assert.ok(Math.abs(c1.dx[i] - want) <= 2 * U * Math.abs(want) + 1e-45, "softcap grad");
      }
    } finally {
      one.close();
      two.close();
    }
  });
}

/** The three-step backward of one full sequence (qStart 0): d loss / d qkv for dz = G. */
async function runBackward(
  backend: Backend,
  p: Problem,
  G: Float32Array,
): Promise<Float32Array> {
  const { T, H, KV, D } = p, W = (H + 2 * KV) * D;
  using scope = backend.scope();
  const qkv = scope.upload(p.qkv), z = scope.alloc(T * H * D);
  const pattern = scope.alloc(H * T * T), dP = scope.alloc(H * T * T);
  backend.attention(args(p, qkv, z, 0), pattern);
  const dz = scope.upload(G), d = scope.alloc(T * W);
  const grad = {
    q: qkv,
    k: qkv.at(H * D),
    v: qkv.at((H + KV) * D),
    stride: W,
    dz,
    dzStride: H * D,
    dq: d,
    dk: d.at(H * D),
    dv: d.at((H + KV) * D),
    dStride: W,
    T,
    nHeads: H,
    dHead: D,
    scale: p.scale,
    nKeyValueHeads: KV,
    kStart: p.kStart,
    window: p.window,
    softcap: p.softcap,
  };
  backend.attentionGradPattern(grad, pattern, dP);
  backend.softmaxBackwardRows(pattern, dP, dP, H, T);
  backend.attentionGradQK(grad, dP);
  return await backend.read(d);
}

/** float64 d(sum z G)/d qkv through softmax, the softcap and the window. */
function gradReference(p: Problem, G: Float32Array): Float64Array {
  const { T, H, KV, D } = p, W = (H + 2 * KV) * D, group = H / KV;
  const out = new Float64Array(T * W);
  for (let h = 0; h < H; h++) {
    const kc = H * D + Math.floor(h / group) * D, vc = (H + KV) * D + Math.floor(h / group) * D;
    for (let i = 0; i < T; i++) {
      const lo = Math.max(p.kStart, p.window ? i - p.window + 1 : 0);
      if (lo > i) continue;
      const raw: number[] = [], s: number[] = [];
      for (let j = lo; j <= i; j++) {
        let dot = 0;
        for (let e = 0; e < D; e++) dot += p.qkv[i * W + h * D + e] * p.qkv[j * W + kc + e];
        raw.push(dot * p.scale);
        s.push(p.softcap ? p.softcap * Math.tanh((dot * p.scale) / p.softcap) : dot * p.scale);
      }
      const m = Math.max(...s);
      const e = s.map((x) => Math.exp(x - m));
      const sum = e.reduce((a, b) => a + b);
      const pr = e.map((x) => x / sum);
      const dp = pr.map((_, t) => {
        let dot = 0;
        for (let c = 0; c < D; c++) dot += G[i * H * D + h * D + c] * p.qkv[(lo + t) * W + vc + c];
        return dot;
      });
      const mean = pr.reduce((a, x, t) => a + x * dp[t], 0);
      pr.forEach((pj, t) => {
        const j = lo + t;
        const tc = p.softcap ? Math.tanh(raw[t] / p.softcap) : 0;
        const dRaw = pj * (dp[t] - mean) * (p.softcap ? 1 - tc * tc : 1) * p.scale;
        for (let c = 0; c < D; c++) {
          out[i * W + h * D + c] += dRaw * p.qkv[j * W + kc + c];
          out[j * W + kc + c] += dRaw * p.qkv[i * W + h * D + c];
          out[j * W + vc + c] += pj * G[i * H * D + h * D + c];
        }
      });
    }
  }
  return out;
}

Deno.test("bad windows and caps are KernelErrors", async () => {
  const backend = await WasmBackend.load({ threads: 1 });
  try {
    using scope = backend.scope();
    const p = problem(1, CASES[2]);
    const qkv = scope.upload(p.qkv), z = scope.alloc(p.T * p.H * p.D);
    for (const bad of [{ window: -1 }, { window: 2.5 }, { softcap: NaN }, { softcap: -3 }]) {
      assert.throws(
        () => backend.attention({ ...args(p, qkv, z, 0), ...bad }),
        KernelError,
        JSON.stringify(bad),
      );
    }
    const x = scope.alloc(8);
    assert.throws(() => backend.softcap(x, x, Infinity), KernelError);
    assert.throws(() => backend.softcapBackward(x, x.at(0, 4), x, 1), KernelError);
    assert.throws(
      () =>
        backend.headRmsNorm(x, scope.alloc(4), { rows: 2, stride: 4, nHeads: 2, dHead: 4 }, 1e-6),
      KernelError,
    );
  } finally {
    backend.close();
  }
});
