/**
 * Kernels against straightforward float64 references, on seeded random inputs, for both builds
 * (relaxed SIMD and plain SIMD).
 *
 * Tolerances are worst-case rounding bounds, not guesses: a float32 sum of k products has an
 * error of at most about (k + 2) * 2^-24 * sum |a_i b_i| (each of the k additions and the
 * product rounds once, relative 2^-24; a fused multiply-add only rounds less). Kernels computed
 * in float64 and rounded once to float32 (layerNorm, geluNew) must be within about one float32
 * ulp (2^-23 relative) of the float64 reference.
 */
import assert from "node:assert/strict";
import { KernelError } from "../core/errors.ts";
import { Kernels, relaxedSimdSupported } from "../backend/wasm/kernels.ts";
import { SeededRng } from "../core/rng.ts";
import { bitsEqual } from "./assertions.ts";

const U = 2 ** -24; // float32 unit roundoff

function randn(n: number, seed: number, sd = 1, mean = 0): Float32Array {
  // The project's seeded generator (weights/synthetic.ts), so tests share one PRNG.
  const r = new SeededRng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = mean + sd * r.normal();
  return out;
}

function close(got: number, want: number, tol: number, what: string): void {
  if (!(Math.abs(got - want) <= tol)) {
    assert.fail(`${what}: got ${got}, want ${want} (diff ${Math.abs(got - want)}, tol ${tol})`);
  }
}

// ---- attention ----
interface Setup {
  nQ: number;
  qStart: number;
  nHeads: number;
  dHead: number;
}
const attnCases: Setup[] = [
  { nQ: 1, qStart: 0, nHeads: 1, dHead: 4 },
  { nQ: 11, qStart: 0, nHeads: 3, dHead: 64 },
  { nQ: 5, qStart: 6, nHeads: 2, dHead: 32 },
  { nQ: 9, qStart: 3, nHeads: 3, dHead: 7 },
  { nQ: 30, qStart: 71, nHeads: 2, dHead: 20 },
];

/** q|k|v laid out per position as [q(all heads) | k | v], stride 3*D (like c_attn output). */
function setupAttention(kn: Kernels, s: Setup, seed: number) {
  const D = s.nHeads * s.dHead, stride = 3 * D, nK = s.qStart + s.nQ;
  const QKV = randn(nK * stride, seed, 1.5);
  const base = kn.alloc(nK * stride);
  kn.write(base, QKV);
  // queries are the last nQ positions
  const q = base + s.qStart * stride * 4, k = base + D * 4, v = base + 2 * D * 4;
  const get = (pos: number, part: number, h: number, d: number) =>
    QKV[pos * stride + part * D + h * s.dHead + d];
  return { D, stride, nK, q, k, v, get, scale: 1 / Math.sqrt(s.dHead) };
}

/** float64 reference with rigorous per-element tolerances. */
function reference(s: Setup, st: ReturnType<typeof setupAttention>) {
  const { nK, get } = st;
  const scale = Math.fround(st.scale);
  const scores = new Float64Array(s.nHeads * s.nQ * nK).fill(-Infinity);
  const scoreTol = new Float64Array(s.nHeads * s.nQ * nK);
  const pat = new Float64Array(s.nHeads * s.nQ * nK);
  const patTol = new Float64Array(s.nHeads * s.nQ * nK);
  const z = new Float64Array(s.nQ * s.nHeads * s.dHead);
  const zTol = new Float64Array(s.nQ * s.nHeads * s.dHead);
  for (let h = 0; h < s.nHeads; h++) {
    for (let i = 0; i < s.nQ; i++) {
      const nk = s.qStart + i + 1, row = (h * s.nQ + i) * nK;
      let es = 0;
      for (let j = 0; j < nk; j++) {
        let dot = 0, abs = 0;
        for (let d = 0; d < s.dHead; d++) {
          const p = get(s.qStart + i, 0, h, d) * get(j, 1, h, d);
          dot += p;
          abs += Math.abs(p);
        }
        scores[row + j] = dot * scale;
        scoreTol[row + j] = (s.dHead + 3) * U * abs * scale;
        es = Math.max(es, scoreTol[row + j]);
      }
      let mx = -Infinity, sum = 0;
      for (let j = 0; j < nk; j++) mx = Math.max(mx, scores[row + j]);
      for (let j = 0; j < nk; j++) sum += Math.exp(scores[row + j] - mx);
      for (let j = 0; j < nk; j++) {
        pat[row + j] = Math.exp(scores[row + j] - mx) / sum;
        // score errors <= es move each p by a factor exp(+-2 es); exp (a few ulp), the f32
        // sum (nk roundings) and the division add (nk + 8) * 2^-24 relative.
        patTol[row + j] = pat[row + j] * (2.2 * es + (nk + 8) * U) + 1e-45;
      }
      for (let d = 0; d < s.dHead; d++) {
        let acc = 0, tol = 0, abs = 0;
        for (let j = 0; j < nk; j++) {
          const vv = get(j, 2, h, d);
          acc += pat[row + j] * vv;
          tol += patTol[row + j] * Math.abs(vv);
          abs += pat[row + j] * Math.abs(vv);
        }
        const zi = (i * s.nHeads + h) * s.dHead + d;
        z[zi] = acc;
        zTol[zi] = tol + (nk + 2) * U * abs;
      }
    }
  }
  return { scores, scoreTol, pat, patTol, z, zTol };
}

const relaxedOk = await relaxedSimdSupported();
const builds: { name: string; relaxed: boolean }[] = [
  { name: "relaxed", relaxed: true },
  { name: "simd", relaxed: false },
];

for (const build of builds) {
  const ignore = build.relaxed && !relaxedOk;
  let kernels: Kernels | undefined;
  const load = async () => kernels ??= await Kernels.load({ relaxedSimd: build.relaxed });

  Deno.test(`[${build.name}] load picks the requested build`, { ignore }, async () => {
    const kn = await load();
    assert.equal(kn.relaxedSimd, build.relaxed);
    assert.ok(kn.memory.buffer instanceof SharedArrayBuffer, "memory is shared");
  });

  Deno.test(`[${build.name}] alloc is 64-byte aligned, mark/release, grows, and fails past 4 GiB`, {
    ignore,
  }, async () => {
    const kn = await load();
    const m = kn.mark();
    const a = kn.alloc(3);
    const b = kn.alloc(17);
    assert.equal(a % 64, 0);
    assert.equal(b % 64, 0);
    assert.ok(b >= a + 12);
    const before = kn.memory.buffer.byteLength;
    const big = kn.alloc(before / 4 + 1000); // forces growth
    assert.ok(kn.memory.buffer.byteLength >= big + (before / 4 + 1000) * 4);
    kn.write(big + before, new Float32Array([1.5]));
    assert.equal(kn.read(big + before, 1)[0], 1.5);
    kn.release(m);
    assert.equal(kn.alloc(1), a, "release frees everything after the mark");
    kn.release(m);
    assert.throws(() => kn.alloc(2 ** 30), (e: unknown) => {
      assert.ok(e instanceof KernelError);
      assert.match(e.message, /asked for 1073741824 floats \(4096\.0 MiB\)/);
      assert.match(e.message, /in use/);
      return true;
    });
    assert.equal(kn.mark(), m, "a failed alloc changes nothing");
  });

  Deno.test(`[${build.name}] read/write/view and strided copies`, { ignore }, async () => {
    const kn = await load();
    const m = kn.mark();
    const p = kn.alloc(4 * 7);
    const data = randn(4 * 7, 1);
    kn.write(p, data);
    const copy = kn.read(p, 28);
    bitsEqual(copy, data, "read");
    copy[0] = 99;
    assert.notEqual(kn.view(p, 1)[0], 99, "read returns an owned copy");
    const block = kn.readStrided(p + 8, 3, 4, 7); // rows 0..2, cols 2..5
    for (let r = 0; r < 3; r++) {
      for (let c = 0; c < 4; c++) assert.equal(block[r * 4 + c], data[r * 7 + 2 + c]);
    }
    const patch = randn(12, 2);
    kn.writeStrided(p + 4, patch, 3, 4, 7);
    const after = kn.read(p, 28);
    for (let r = 0; r < 4; r++) {
      for (let c = 0; c < 7; c++) {
        const inPatch = r < 3 && c >= 1 && c < 5;
        assert.equal(after[r * 7 + c], inPatch ? patch[r * 4 + c - 1] : data[r * 7 + c]);
      }
    }
    // Dense rows (stride = cols) and a lone row take one copy: the same values, owned.
    const dense = kn.readStrided(p + 4 * 7, 3, 7, 7); // rows 1..3
    bitsEqual(dense, after.subarray(7, 28), "dense readStrided");
    dense[0] = 99;
    assert.notEqual(kn.view(p + 4 * 7, 1)[0], 99, "readStrided returns an owned copy");
    bitsEqual(kn.readStrided(p + 8, 1, 3, 7), after.subarray(2, 5), "one-row readStrided");
    const rows = randn(14, 3);
    kn.writeStrided(p, rows, 2, 7, 7);
    kn.writeStrided(p + 4 * 21, rows.subarray(0, 5), 1, 5, 7);
    const last = kn.read(p, 28);
    bitsEqual(last.subarray(0, 14), rows, "dense writeStrided");
    bitsEqual(last.subarray(21, 26), rows.subarray(0, 5), "one-row writeStrided");
    bitsEqual(last.subarray(14, 21), after.subarray(14, 21), "rows outside are kept");
    bitsEqual(last.subarray(26), after.subarray(26), "columns outside are kept");
    kn.release(m);
  });

  Deno.test(`[${build.name}] packB/unpackB round-trip exactly`, { ignore }, async () => {
    const kn = await load();
    for (const [k, n] of [[1, 1], [3, 17], [5, 16], [7, 50], [2, 50257]]) {
      const m = kn.mark();
      const data = randn(k * n, k * 1000 + n);
      const packed = kn.uploadPacked(data, k, n);
      bitsEqual(kn.downloadPacked(packed, k, n), data, `round trip ${k}x${n}`);
      kn.release(m);
    }
  });

  Deno.test(`[${build.name}] matmul matches float64 (odd sizes, strides, bias, accumulate, rows)`, {
    ignore,
  }, async () => {
    const kn = await load();
    const cases: {
      m: number;
      k: number;
      n: number;
      lda?: number;
      ldc?: number;
      bias?: boolean;
      acc?: boolean;
      rows?: [number, number];
    }[] = [
      { m: 1, k: 1, n: 1 },
      { m: 3, k: 5, n: 7 },
      { m: 4, k: 16, n: 16 },
      { m: 17, k: 33, n: 50, bias: true },
      { m: 101, k: 64, n: 101, lda: 70, ldc: 130 },
      { m: 9, k: 17, n: 35, acc: true },
      { m: 13, k: 40, n: 48, bias: true, acc: true, lda: 41, ldc: 55 },
      { m: 23, k: 12, n: 37, bias: true, rows: [5, 18] },
      { m: 6, k: 3, n: 50257, bias: true },
      { m: 7, k: 768, n: 19 },
      // more rows than one packed-A block (128) and a deeper k than one k block (1024)
      { m: 133, k: 1030, n: 21, bias: true, acc: true, rows: [3, 131], lda: 1031 },
      { m: 130, k: 2049, n: 9 },
    ];
    let seed = 10;
    for (const t of cases) {
      const { m, k, n } = t;
      const lda = t.lda ?? k, ldc = t.ldc ?? n;
      const [r0, r1] = t.rows ?? [0, m];
      const mk = kn.mark();
      const A = randn(m * lda, seed++);
      const B = randn(k * n, seed++);
      const bias = randn(n, seed++);
      const C0 = randn(m * ldc, seed++);
      const a = kn.alloc(m * lda), c = kn.alloc(m * ldc), bp = kn.alloc(n);
      kn.write(a, A);
      kn.write(c, C0);
      kn.write(bp, bias);
      const packed = kn.uploadPacked(B, k, n);
      kn.matmul(a, packed, c, m, k, n, {
        lda: t.lda,
        ldc: t.ldc,
        bias: t.bias ? bp : undefined,
        accumulate: t.acc,
        rowStart: t.rows?.[0],
        rowEnd: t.rows?.[1],
      });
      const C = kn.read(c, m * ldc);
      const what = JSON.stringify(t);
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < ldc; j++) {
          const got = C[i * ldc + j];
          if (i < r0 || i >= r1 || j >= n) {
            assert.equal(got, C0[i * ldc + j], `${what}: untouched element (${i},${j})`);
            continue;
          }
          let want = 0, absSum = 0;
          if (t.acc) {
            want += C0[i * ldc + j];
            absSum += Math.abs(C0[i * ldc + j]);
          }
          if (t.bias) {
            want += bias[j];
            absSum += Math.abs(bias[j]);
          }
          for (let p = 0; p < k; p++) {
            const prod = A[i * lda + p] * B[p * n + j];
            want += prod;
            absSum += Math.abs(prod);
          }
          close(got, want, (k + 2) * U * absSum, `${what} C[${i},${j}]`);
        }
      }
      kn.release(mk);
    }
  });

  Deno.test(
    `[${build.name}] matmul row splits give bit-identical results`,
    { ignore },
    async () => {
      const kn = await load();
      const mk = kn.mark();
      const m = 137, k = 1100, n = 70;
      const a = kn.alloc(m * k), c1 = kn.alloc(m * n), c2 = kn.alloc(m * n), bias = kn.alloc(n);
      kn.write(a, randn(m * k, 77));
      kn.write(bias, randn(n, 78));
      const C0 = randn(m * n, 79);
      const packed = kn.uploadPacked(randn(k * n, 80), k, n);
      kn.write(c1, C0);
      kn.write(c2, C0);
      kn.matmul(a, packed, c1, m, k, n, { bias, accumulate: true });
      for (const [s, e] of [[0, 1], [1, 6], [6, 7], [7, 30], [30, 137]]) {
        kn.matmul(a, packed, c2, m, k, n, { bias, accumulate: true, rowStart: s, rowEnd: e });
      }
      bitsEqual(kn.read(c2, m * n), kn.read(c1, m * n), "split rows vs whole");
      kn.release(mk);
    },
  );

  Deno.test(`[${build.name}] layerNorm matches float64 (with and without gamma/beta/scale)`, {
    ignore,
  }, async () => {
    const kn = await load();
    for (const [rows, d] of [[1, 1], [3, 5], [7, 768], [4, 130], [2, 3]]) {
      for (const affine of [false, true]) {
        const mk = kn.mark();
        const X = randn(rows * d, rows * 31 + d, 3, 5); // offset mean: tests the centring
        const G = randn(d, d + 1), Bt = randn(d, d + 2);
        const x = kn.alloc(rows * d), out = kn.alloc(rows * d), sc = kn.alloc(rows);
        const g = kn.alloc(d), b = kn.alloc(d);
        kn.write(x, X);
        kn.write(g, G);
        kn.write(b, Bt);
        const eps = 1e-5;
        kn.layerNorm(
          x,
          out,
          rows,
          d,
          eps,
          affine ? { gamma: g, beta: b, scale: sc } : { scale: sc },
        );
        const Y = kn.read(out, rows * d), S = kn.read(sc, rows);
        for (let r = 0; r < rows; r++) {
          let mean = 0;
          for (let j = 0; j < d; j++) mean += X[r * d + j];
          mean /= d;
          let v = 0;
          for (let j = 0; j < d; j++) v += (X[r * d + j] - mean) ** 2;
          const s = Math.sqrt(v / d + eps);
          close(S[r], s, 2 * U * s, `scale[${r}]`);
          for (let j = 0; j < d; j++) {
            const nrm = (X[r * d + j] - mean) / s;
            const want = affine ? nrm * G[j] + Bt[j] : nrm;
            const mag = affine ? Math.abs(nrm * G[j]) + Math.abs(Bt[j]) : Math.abs(nrm);
            close(
              Y[r * d + j],
              want,
              2 * U * Math.abs(want) + 1e-12 * (mag + 1),
              `ln ${rows}x${d}`,
            );
          }
        }
        // in place, and a row range
        kn.layerNorm(x, x, rows, d, eps, affine ? { gamma: g, beta: b } : {});
        bitsEqual(kn.read(x, rows * d), Y, "in-place layerNorm");
        kn.release(mk);
      }
    }
  });

  Deno.test(`[${build.name}] layerNorm row range touches only those rows`, { ignore }, async () => {
    const kn = await load();
    const mk = kn.mark();
    const rows = 6, d = 10;
    const X = randn(rows * d, 5);
    const x = kn.alloc(rows * d), out = kn.alloc(rows * d), whole = kn.alloc(rows * d);
    kn.write(x, X);
    kn.write(out, new Float32Array(rows * d).fill(7));
    kn.layerNorm(x, whole, rows, d, 1e-5);
    kn.layerNorm(x, out, rows, d, 1e-5, { rowStart: 2, rowEnd: 5 });
    const O = kn.read(out, rows * d), W = kn.read(whole, rows * d);
    for (let i = 0; i < rows * d; i++) {
      const r = Math.floor(i / d);
      assert.equal(O[i], r >= 2 && r < 5 ? W[i] : 7);
    }
    kn.release(mk);
  });

  Deno.test(`[${build.name}] geluNew matches float64 to ~1 ulp, including near 0 and tails`, {
    ignore,
  }, async () => {
    const kn = await load();
    const mk = kn.mark();
    const special = [
      0,
      -0,
      1e-30,
      -1e-30,
      1e-8,
      -1e-8,
      1e-3,
      -1e-3,
      0.5,
      -0.5,
      3,
      -3,
      5,
      -5,
      9,
      -9,
      10,
      -10,
      20,
      -20,
      100,
      -100,
      1e20,
      -1e20,
    ];
    const X = new Float32Array(4001 + special.length);
    X.set(randn(4001, 9, 3));
    X.set(special, 4001);
    const x = kn.alloc(X.length), out = kn.alloc(X.length);
    kn.write(x, X);
    kn.geluNew(x, out, X.length);
    const Y = kn.read(out, X.length);
    const c = Math.sqrt(2 / Math.PI);
    for (let i = 0; i < X.length; i++) {
      const xi = X[i];
      const u = c * (xi + 0.044715 * xi * xi * xi);
      // Textbook form: accurate in float64 to ~1e-16 * |x| absolute.
      const textbook = 0.5 * xi * (1 + Math.tanh(u));
      close(Y[i], textbook, 2 * U * Math.abs(textbook) + 1e-15 * Math.abs(xi), `gelu(${xi})`);
      // Same value as x * sigmoid(2u): accurate in relative terms for negative x too.
      const exact = xi / (1 + Math.exp(-2 * u));
      const tol = Math.abs(exact) < 1.2e-38 ? 1.5e-45 : 2 * U * Math.abs(exact);
      close(Y[i], exact, tol, `gelu(${xi}) relative`);
    }
    // in place
    kn.geluNew(x, x, X.length);
    bitsEqual(kn.read(x, X.length), Y, "in-place gelu");
    kn.release(mk);
  });

  Deno.test(`[${build.name}] add is exact`, { ignore }, async () => {
    const kn = await load();
    const mk = kn.mark();
    for (const n of [1, 3, 4, 17, 1001]) {
      const A = randn(n, n), B = randn(n, n + 1);
      const a = kn.alloc(n), b = kn.alloc(n), o = kn.alloc(n);
      kn.write(a, A);
      kn.write(b, B);
      kn.add(a, b, o, n);
      const want = new Float32Array(n);
      for (let i = 0; i < n; i++) want[i] = A[i] + B[i];
      bitsEqual(kn.read(o, n), want, `add ${n}`);
    }
    kn.release(mk);
  });

  Deno.test(`[${build.name}] attention (fused and three-step) matches float64`, {
    ignore,
  }, async () => {
    const kn = await load();
    let seed = 500;
    for (const s of attnCases) {
      const mk = kn.mark();
      const st = setupAttention(kn, s, seed++);
      const ref = reference(s, st);
      const what = JSON.stringify(s);
      const nP = s.nHeads * s.nQ * st.nK;
      const zStride = st.D + 3;
      const zA = kn.alloc(s.nQ * zStride), zB = kn.alloc(s.nQ * zStride);
      const zC = kn.alloc(s.nQ * zStride);
      const patA = kn.alloc(nP), scores = kn.alloc(nP), patB = kn.alloc(nP);
      kn.write(patA, new Float32Array(nP).fill(NaN)); // masked entries must be written as 0
      const common = {
        q: st.q,
        k: st.k,
        stride: st.stride,
        nQ: s.nQ,
        qStart: s.qStart,
        nHeads: s.nHeads,
        dHead: s.dHead,
        scale: st.scale,
      };
      kn.attention({ ...common, v: st.v, z: zA, zStride, pattern: patA });
      kn.attention({ ...common, v: st.v, z: zB, zStride }); // no pattern: scratch path
      kn.attentionScores(common, scores);
      kn.softmaxRows(scores, patB, s.nHeads, s.nQ, s.qStart);
      kn.attentionApply({
        pattern: patB,
        v: st.v,
        stride: st.stride,
        z: zC,
        zStride,
        nQ: s.nQ,
        qStart: s.qStart,
        nHeads: s.nHeads,
        dHead: s.dHead,
      });
      const P = kn.read(patA, nP), S = kn.read(scores, nP);
      for (let e = 0; e < nP; e++) {
        if (ref.scores[e] === -Infinity) {
          assert.equal(S[e], -Infinity, `${what}: masked score ${e}`);
          assert.equal(P[e], 0, `${what}: masked pattern ${e}`);
        } else {
          close(S[e], ref.scores[e], ref.scoreTol[e], `${what}: score ${e}`);
          close(P[e], ref.pat[e], ref.patTol[e], `${what}: pattern ${e}`);
        }
      }
      const Z = kn.readStrided(zA, s.nQ, st.D, zStride);
      for (let e = 0; e < Z.length; e++) close(Z[e], ref.z[e], ref.zTol[e], `${what}: z ${e}`);
      // the three paths are the same arithmetic
      bitsEqual(kn.read(patB, nP), P, `${what}: softmaxRows(attentionScores) vs fused pattern`);
      bitsEqual(kn.readStrided(zB, s.nQ, st.D, zStride), Z, `${what}: fused without pattern`);
      bitsEqual(kn.readStrided(zC, s.nQ, st.D, zStride), Z, `${what}: attentionApply`);
      kn.release(mk);
    }
  });

  Deno.test(`[${build.name}] attention never reads keys/values/pattern beyond the causal limit`, {
    ignore,
  }, async () => {
    const kn = await load();
    const s = { nQ: 6, qStart: 4, nHeads: 2, dHead: 12 };
    const mk = kn.mark();
    const st = setupAttention(kn, s, 900);
    const zStride = st.D, nP = s.nHeads * s.nQ * st.nK;
    const zAll = kn.alloc(s.nQ * zStride), pAll = kn.alloc(nP);
    const common = {
      k: st.k,
      stride: st.stride,
      nHeads: s.nHeads,
      dHead: s.dHead,
      scale: st.scale,
    };
    kn.attention({
      ...common,
      q: st.q,
      v: st.v,
      z: zAll,
      zStride,
      nQ: s.nQ,
      qStart: s.qStart,
      pattern: pAll,
    });
    const Zall = kn.read(zAll, s.nQ * zStride);
    // Query i alone, with every key/value row after its position poisoned with NaN.
    const zOne = kn.alloc(zStride), pOne = kn.alloc(s.nHeads * st.nK);
    for (let i = 0; i < s.nQ; i++) {
      const pos = s.qStart + i;
      const saved = kn.read(
        st.k - st.D * 4 + (pos + 1) * st.stride * 4,
        (st.nK - pos - 1) * st.stride,
      );
      // poison k and v parts of later rows (q of those rows is not needed for query i)
      for (let j = pos + 1; j < st.nK; j++) {
        kn.write(st.k + j * st.stride * 4, new Float32Array(2 * st.D).fill(NaN));
      }
      kn.attention({
        ...common,
        q: st.q + i * st.stride * 4,
        v: st.v,
        z: zOne,
        zStride,
        nQ: 1,
        qStart: pos,
        pattern: pOne,
      });
      bitsEqual(kn.read(zOne, st.D), Zall.subarray(i * zStride, i * zStride + st.D), `query ${i}`);
      kn.write(st.k - st.D * 4 + (pos + 1) * st.stride * 4, saved);
    }
    // attentionApply with NaN in the masked part of the pattern still gives the same z.
    const P = kn.read(pAll, nP);
    for (let h = 0; h < s.nHeads; h++) {
      for (let i = 0; i < s.nQ; i++) {
        for (let j = s.qStart + i + 1; j < st.nK; j++) P[(h * s.nQ + i) * st.nK + j] = NaN;
      }
    }
    kn.write(pAll, P);
    const z2 = kn.alloc(s.nQ * zStride);
    kn.attentionApply({ pattern: pAll, v: st.v, stride: st.stride, z: z2, zStride, ...s });
    bitsEqual(kn.read(z2, s.nQ * zStride), Zall, "attentionApply with poisoned masked entries");
    kn.release(mk);
  });

  Deno.test(`[${build.name}] attention head ranges compose to the whole`, { ignore }, async () => {
    const kn = await load();
    const s = { nQ: 7, qStart: 2, nHeads: 5, dHead: 16 };
    const mk = kn.mark();
    const st = setupAttention(kn, s, 1234);
    const nP = s.nHeads * s.nQ * st.nK;
    const z1 = kn.alloc(s.nQ * st.D), z2 = kn.alloc(s.nQ * st.D);
    const p1 = kn.alloc(nP), p2 = kn.alloc(nP);
    const args = {
      q: st.q,
      k: st.k,
      v: st.v,
      stride: st.stride,
      zStride: st.D,
      ...s,
      scale: st.scale,
    };
    kn.attention({ ...args, z: z1, pattern: p1 });
    for (const [a, b] of [[0, 2], [2, 3], [3, 5]]) {
      kn.attention({ ...args, z: z2, pattern: p2, headStart: a, headEnd: b });
    }
    bitsEqual(kn.read(z2, s.nQ * st.D), kn.read(z1, s.nQ * st.D), "z by head ranges");
    bitsEqual(kn.read(p2, nP), kn.read(p1, nP), "pattern by head ranges");
    kn.release(mk);
  });

  Deno.test(`[${build.name}] softmaxRows matches float64 on given scores (with -inf)`, {
    ignore,
  }, async () => {
    const kn = await load();
    const nHeads = 2, nQ = 5, qStart = 9, nK = qStart + nQ, n = nHeads * nQ * nK;
    const mk = kn.mark();
    const S = randn(n, 42, 4);
    S[3] = -Infinity; // an ablated score (as a hook might set) gets probability 0
    const sp = kn.alloc(n), pp = kn.alloc(n);
    kn.write(sp, S);
    kn.softmaxRows(sp, pp, nHeads, nQ, qStart);
    const P = kn.read(pp, n);
    for (let h = 0; h < nHeads; h++) {
      for (let i = 0; i < nQ; i++) {
        const row = (h * nQ + i) * nK, nk = qStart + i + 1;
        let mx = -Infinity, sum = 0;
        for (let j = 0; j < nk; j++) mx = Math.max(mx, S[row + j]);
        for (let j = 0; j < nk; j++) sum += Math.exp(S[row + j] - mx);
        for (let j = 0; j < nK; j++) {
          const want = j < nk ? Math.exp(S[row + j] - mx) / sum : 0;
          close(P[row + j], want, want * (nk + 8) * U + 1e-45, `p[${h},${i},${j}]`);
        }
      }
    }
    assert.equal(P[3], 0);
    kn.release(mk);
  });
}

Deno.test("both builds agree to rounding on a GPT-2-shaped matmul", {
  ignore: !relaxedOk,
}, async () => {
  const r = await Kernels.load({ relaxedSimd: true });
  const p = await Kernels.load({ relaxedSimd: false });
  const m = 5, k = 768, n = 40;
  const A = randn(m * k, 1), B = randn(k * n, 2);
  const out: Float32Array[] = [];
  for (const kn of [r, p]) {
    const a = kn.alloc(m * k), c = kn.alloc(m * n);
    kn.write(a, A);
    kn.matmul(a, kn.uploadPacked(B, k, n), c, m, k, n);
    out.push(kn.read(c, m * n));
  }
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let abs = 0;
      for (let p = 0; p < k; p++) abs += Math.abs(A[i * k + p] * B[p * n + j]);
      // each build is within (k + 2) * 2^-24 * abs of the exact value
      close(out[0][i * n + j], out[1][i * n + j], 2 * (k + 2) * U * abs, `c[${i},${j}]`);
    }
  }
});

// ---- threads ----

/** Runs the same kernel calls on two Kernels instances and returns both memories' outputs. */
async function runBoth(
  relaxed: boolean,
  body: (kn: Kernels) => { ptr: number; n: number; what: string }[],
): Promise<void> {
  const one = await Kernels.load({ relaxedSimd: relaxed, threads: 1 });
  const two = await Kernels.load({ relaxedSimd: relaxed, threads: 2 });
  try {
    assert.equal(one.threads, 1);
    assert.equal(two.threads, 2);
    const r1 = body(one), r2 = body(two);
    for (let i = 0; i < r1.length; i++) {
      bitsEqual(
        two.read(r2[i].ptr, r2[i].n),
        one.read(r1[i].ptr, r1[i].n),
        `${r1[i].what}: 2 threads vs 1`,
      );
    }
  } finally {
    two.close();
  }
}

for (const build of builds) {
  const ignore = build.relaxed && !relaxedOk;

  Deno.test(`[${build.name}] 2 threads give bit-identical matmul (panel and row splits)`, {
    ignore,
  }, async () => {
    await runBoth(build.relaxed, (kn) => {
      const out = [];
      // [m, k, n, rowStart, rowEnd]: many panels (split by panels), few panels (split by rows)
      for (
        const [m, k, n, r0, r1] of [[101, 300, 700, 0, 101], [203, 300, 20, 0, 203], [
          150,
          1100,
          45,
          7,
          149,
        ]]
      ) {
        const a = kn.alloc(m * k), c = kn.alloc(m * n), bias = kn.alloc(n);
        kn.write(a, randn(m * k, m));
        kn.write(bias, randn(n, n));
        kn.write(c, randn(m * n, k));
        const packed = kn.uploadPacked(randn(k * n, m + k + n), k, n);
        kn.matmul(a, packed, c, m, k, n, { bias, accumulate: true, rowStart: r0, rowEnd: r1 });
        out.push({ ptr: c, n: m * n, what: `matmul ${m}x${k}x${n}` });
      }
      return out;
    });
  });

  Deno.test(`[${build.name}] 2 threads give bit-identical layerNorm, gelu, add and attention`, {
    ignore,
  }, async () => {
    await runBoth(build.relaxed, (kn) => {
      const out = [];
      const rows = 300, d = 768, n = 100003;
      const x = kn.alloc(rows * d), y = kn.alloc(rows * d), sc = kn.alloc(rows), g = kn.alloc(d);
      kn.write(x, randn(rows * d, 1, 2, 1));
      kn.write(g, randn(d, 2));
      kn.layerNorm(x, y, rows, d, 1e-5, { gamma: g, beta: g, scale: sc });
      out.push({ ptr: y, n: rows * d, what: "layerNorm" }, {
        ptr: sc,
        n: rows,
        what: "layerNorm scale",
      });
      const u = kn.alloc(n), v = kn.alloc(n), w = kn.alloc(n);
      kn.write(u, randn(n, 3, 3));
      kn.write(v, randn(n, 4));
      kn.geluNew(u, w, n);
      out.push({ ptr: w, n, what: "geluNew" });
      kn.add(u, v, v, n);
      out.push({ ptr: v, n, what: "add" });
      const s = { nQ: 50, qStart: 20, nHeads: 12, dHead: 64 };
      const st = setupAttention(kn, s, 77);
      const nP = s.nHeads * s.nQ * st.nK;
      const z1 = kn.alloc(s.nQ * st.D), z2 = kn.alloc(s.nQ * st.D), z3 = kn.alloc(s.nQ * st.D);
      const p1 = kn.alloc(nP), scores = kn.alloc(nP), p2 = kn.alloc(nP);
      const common = { q: st.q, k: st.k, stride: st.stride, ...s, scale: st.scale };
      kn.attention({ ...common, v: st.v, z: z1, zStride: st.D, pattern: p1 });
      kn.attention({ ...common, v: st.v, z: z2, zStride: st.D });
      kn.attentionScores(common, scores);
      kn.softmaxRows(scores, p2, s.nHeads, s.nQ, s.qStart);
      kn.attentionApply({ pattern: p2, v: st.v, stride: st.stride, z: z3, zStride: st.D, ...s });
      out.push(
        { ptr: z1, n: s.nQ * st.D, what: "attention z" },
        { ptr: p1, n: nP, what: "attention pattern" },
        { ptr: z2, n: s.nQ * st.D, what: "attention z (no pattern)" },
        { ptr: scores, n: nP, what: "attentionScores" },
        { ptr: p2, n: nP, what: "softmaxRows" },
        { ptr: z3, n: s.nQ * st.D, what: "attentionApply" },
      );
      return out;
    });
  });
}

Deno.test("close() stops the workers and the kernels keep working on one thread", async () => {
  const kn = await Kernels.load({ threads: 2 });
  assert.equal(kn.threads, 2);
  kn.close();
  assert.equal(kn.threads, 1);
  const m = 64, k = 128, n = 256;
  const a = kn.alloc(m * k), c = kn.alloc(m * n);
  kn.write(a, new Float32Array(m * k).fill(1));
  kn.matmul(a, kn.uploadPacked(new Float32Array(k * n).fill(0.5), k, n), c, m, k, n);
  assert.ok(kn.read(c, m * n).every((x) => x === 64));
  kn.close(); // idempotent
});

Deno.test("a process that never calls close() still exits", async () => {
  const url = new URL("../backend/wasm/kernels.ts", import.meta.url).href;
  const code = `import { Kernels } from ${JSON.stringify(url)};
const kn = await Kernels.load({ threads: 2 });
const a = kn.alloc(1 << 17);
kn.geluNew(a, a, 1 << 17);
console.log("threads=" + kn.threads);`;
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const child = cmd.spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(code));
  await writer.close();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), 30_000));
  const result = await Promise.race([child.output(), timeout]);
  clearTimeout(timer);
  if (result === "timeout") {
    child.kill();
    await child.status;
    assert.fail("the process did not exit within 30 s while kernel workers were running");
  }
  const stderr = new TextDecoder().decode(result.stderr);
  assert.equal(result.code, 0, stderr);
  assert.match(new TextDecoder().decode(result.stdout), /threads=2/);
});

Deno.test("a bad pointer is a KernelError on one thread and on two", async () => {
  for (const threads of [1, 2]) {
    const kn = await Kernels.load({ threads });
    try {
      const a = kn.alloc(64 * 64), p = kn.alloc(kn.packedSize(64, 512));
      const far = 2 ** 31; // beyond the memory
      assert.throws(() => kn.matmul(a, p, far, 64, 64, 512), (e: unknown) => {
        assert.ok(e instanceof KernelError, String(e));
        assert.match(e.message, /matmul/);
        return true;
      });
      // the kernels still work afterwards
      const c = kn.alloc(64 * 512);
      kn.matmul(a, p, c, 64, 64, 512);
    } finally {
      kn.close();
    }
  }
});

for (const build of builds) {
  const ignore = build.relaxed && !relaxedOk;
  Deno.test(
    `[${build.name}] argmaxRows and logSumExpRows match float64 (ties, -inf, NaN, strides)`,
    {
      ignore,
    },
    async () => {
      for (const threads of [1, 2]) {
        const kn = await Kernels.load({ relaxedSimd: build.relaxed, threads });
        try {
          for (const [rows, n, ld] of [[1, 1, 1], [3, 7, 9], [5, 50257, 50260], [40, 2048, 2048]]) {
            const X = randn(rows * ld, rows + n, 4);
            if (rows >= 3 && n >= 7) {
              X[0 * ld + 2] = X[0 * ld + 5] = 100; // tie: first wins
              for (let j = 0; j < n; j++) X[1 * ld + j] = -Infinity; // all -inf: index 0
              X[2 * ld + 0] = NaN; // NaN never wins
            }
            const x = kn.alloc(rows * ld);
            kn.write(x, X);
            const am = kn.argmaxRows(x, rows, n, ld);
            const lse = kn.logSumExpRows(x, rows, n, ld);
            for (let r = 0; r < rows; r++) {
              let best = 0, m = -Infinity;
              for (let j = 0; j < n; j++) {
                const v = X[r * ld + j];
                if (v > X[r * ld + best] || Number.isNaN(X[r * ld + best])) best = j;
                if (v > m) m = v;
              }
              assert.equal(am[r], best, `argmax row ${r} of ${rows}x${n}`);
              if (m === -Infinity) continue;
              let s = 0;
              for (let j = 0; j < n; j++) {
                if (!Number.isNaN(X[r * ld + j])) s += Math.exp(X[r * ld + j] - m);
              }
              if (Number.isNaN(X[r * ld])) {
                assert.ok(Number.isNaN(lse[r]), "a NaN in the row makes log-sum-exp NaN");
                continue;
              }
              // f32 exp (<= 4 ulp each) summed in f64: relative error of the sum < 4 * 2^-23
              close(lse[r], m + Math.log(s), 4 * 2 ** -23 + 1e-12 * Math.abs(m), `lse row ${r}`);
            }
          }
        } finally {
          kn.close();
        }
      }
    },
  );
}

Deno.test("many back-to-back threaded calls stay correct (worker hand-off protocol)", async () => {
  const one = await Kernels.load({ threads: 1 });
  const two = await Kernels.load({ threads: 2 });
  try {
    const m = 40, k = 256, n = 160, len = 70000;
    const A = randn(m * k, 5), B = randn(k * n, 6), X = randn(len, 7, 3);
    const setup = (kn: Kernels) => {
      const a = kn.alloc(m * k), c = kn.alloc(m * n), x = kn.alloc(len), y = kn.alloc(len);
      kn.write(a, A);
      kn.write(x, X);
      return { a, c, x, y, p: kn.uploadPacked(B, k, n) };
    };
    const s1 = setup(one), s2 = setup(two);
    one.matmul(s1.a, s1.p, s1.c, m, k, n);
    one.geluNew(s1.x, s1.y, len);
    const wantC = one.read(s1.c, m * n), wantY = one.read(s1.y, len);
    for (let i = 0; i < 300; i++) {
      two.matmul(s2.a, s2.p, s2.c, m, k, n);
      two.geluNew(s2.x, s2.y, len);
      bitsEqual(two.read(s2.c, m * n), wantC, `matmul call ${i}`);
      bitsEqual(two.read(s2.y, len), wantY, `gelu call ${i}`);
      two.view(s2.c, m * n).fill(NaN); // a call that skipped work would show
      two.view(s2.y, len).fill(NaN);
    }
  } finally {
    two.close();
  }
});

Deno.test("the kernel modules have no data segments (workers instantiate over shared memory)", async () => {
  // Every instantiation re-applies active data segments to the memory; with threads that would
  // rewrite memory other threads use. Lookup tables (e.g. AssemblyScript's Math.log/exp) add them.
  for (const file of ["kernels-relaxed.wasm", "kernels-simd.wasm"]) {
    const bytes = await Deno.readFile(new URL(`../backend/wasm/${file}`, import.meta.url));
    const mod = await WebAssembly.compile(bytes);
    assert.deepEqual(
      WebAssembly.Module.imports(mod).map((i) => `${i.module}.${i.name}:${i.kind}`),
      ["env.memory:memory"],
    );
    let p = 8;
    const uleb = () => {
      let v = 0, shift = 0, b;
      do {
        b = bytes[p++];
        v |= (b & 0x7f) << shift;
        shift += 7;
      } while (b & 0x80);
      return v >>> 0;
    };
    while (p < bytes.length) {
      const id = bytes[p++];
      const size = uleb();
      assert.notEqual(id, 11, `${file} has a data section: avoid stdlib functions with tables`);
      p += size;
    }
  }
});
