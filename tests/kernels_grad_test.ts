/**
 * The backward kernels against float64 references, for both builds (relaxed SIMD and plain
 * SIMD), and their bit-identity for 1 and 2 threads.
 *
 * Tolerances follow kernels_test.ts: a float32 sum of n products is within (n + 2) 2^-24
 * sum |a_i b_i| of the exact sum; kernels computed in float64 and rounded once (normBackward,
 * activationBackward's gelu_new', softmaxBackwardRows) are within a few float32 ulps of the float64 reference,
 * measured against the size of the terms that cancel. The references are independent of the
 * kernels' formulas where it matters: the norm's input gradient is checked against central
 * differences of a float64 LayerNorm, gelu_new' against the tanh form of the derivative.
 */
import assert from "node:assert/strict";
import { Kernels, relaxedSimdSupported } from "../backend/wasm/kernels.ts";
import { SeededRng } from "../core/rng.ts";
import { bitsEqual } from "./assertions.ts";

const U = 2 ** -24; // float32 unit roundoff

function randn(n: number, seed: number, sd = 1, mean = 0): Float32Array<ArrayBuffer> {
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

function transpose(b: Float32Array, k: number, n: number): Float32Array {
  const t = new Float32Array(k * n);
  for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) t[j * k + i] = b[i * n + j];
  return t;
}

/** Nearest bfloat16 of a finite f32, ties to even (as packBBf16). */
function bf16(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  const r = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  return new Float32Array(new Uint32Array([r << 16]).buffer)[0];
}

const relaxedOk = await relaxedSimdSupported();
const builds = [
  { name: "relaxed", relaxed: true },
  { name: "simd", relaxed: false },
];

/** Runs `body` on 1 and 2 threads and asserts every listed output is bit-identical. */
async function runBoth(
  relaxed: boolean,
  body: (kn: Kernels) => { ptr: number; n: number; what: string }[],
): Promise<void> {
  const one = await Kernels.load({ relaxedSimd: relaxed, threads: 1 });
  const two = await Kernels.load({ relaxedSimd: relaxed, threads: 2 });
  try {
    const r1 = body(one), r2 = body(two);
    for (let i = 0; i < r1.length; i++) {
      bitsEqual(two.read(r2[i].ptr, r2[i].n), one.read(r1[i].ptr, r1[i].n), `${r1[i].what}`);
    }
  } finally {
    two.close();
  }
}

// ---- attention: a float64 reference of the three backward steps ----
interface AttnCase {
  T: number;
  nHeads: number;
  dHead: number;
  group: number;
  kStart: number;
}
const attnCases: AttnCase[] = [
  { T: 1, nHeads: 1, dHead: 4, group: 1, kStart: 0 },
  { T: 13, nHeads: 3, dHead: 64, group: 1, kStart: 0 },
  { T: 9, nHeads: 4, dHead: 7, group: 2, kStart: 0 },
  { T: 21, nHeads: 2, dHead: 20, group: 1, kStart: 5 },
  { T: 17, nHeads: 6, dHead: 32, group: 3, kStart: 2 },
];

/** q|k|v rows [T, (nHeads + 2 nKv) dHead], dz rows [T, nHeads dHead], a causal pattern. */
function attnInputs(c: AttnCase, seed: number) {
  const { T, nHeads, dHead, group, kStart } = c;
  const nKv = nHeads / group, D = nHeads * dHead, W = (nHeads + 2 * nKv) * dHead;
  const qkv = randn(T * W, seed, 1.2);
  const dz = randn(T * D, seed + 1);
  const scale = Math.fround(1 / Math.sqrt(dHead));
  const q = (i: number, h: number, d: number) => qkv[i * W + h * dHead + d];
  const k = (j: number, g: number, d: number) => qkv[j * W + D + g * dHead + d];
  const v = (j: number, g: number, d: number) => qkv[j * W + D + nKv * dHead + g * dHead + d];
  // the pattern in float64, rounded to f32 (the kernels take it as input)
  const P = new Float32Array(nHeads * T * T);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < T; i++) {
      if (i < kStart) continue;
      const s: number[] = [];
      for (let j = kStart; j <= i; j++) {
        let dot = 0;
        for (let d = 0; d < dHead; d++) dot += q(i, h, d) * k(j, Math.floor(h / group), d);
        s.push(dot * scale);
      }
      const mx = Math.max(...s);
      const e = s.map((x) => Math.exp(x - mx));
      const sum = e.reduce((a, b) => a + b, 0);
      e.forEach((x, t) => P[(h * T + i) * T + kStart + t] = x / sum);
    }
  }
  return { nKv, D, W, qkv, dz, scale, q, k, v, P };
}

for (const build of builds) {
  const ignore = build.relaxed && !relaxedOk;
  let kernels: Kernels | undefined;
  const load = async () => kernels ??= await Kernels.load({ relaxedSimd: build.relaxed });

  Deno.test(`[${build.name}] matmulBT equals matmul over the transposed matrix, bit for bit`, {
    ignore,
  }, async () => {
    const kn = await load();
    // [m, k, n] of C[m, k] = A[m, n] B^T: edge panels, a lone last row, inner past one k block
    const cases: { m: number; k: number; n: number; lda?: number; ldc?: number; acc?: boolean }[] =
      [
        { m: 1, k: 1, n: 1 },
        { m: 3, k: 5, n: 7 },
        { m: 4, k: 8, n: 8 },
        { m: 17, k: 33, n: 50, acc: true },
        { m: 101, k: 64, n: 101, lda: 110, ldc: 70 },
        { m: 5, k: 19, n: 2100 },
        { m: 133, k: 37, n: 1030, acc: true, lda: 1031 },
        { m: 9, k: 768, n: 3 },
      ];
    let seed = 100;
    for (const t of cases) {
      const { m, k, n } = t;
      const lda = t.lda ?? n, ldc = t.ldc ?? k;
      for (const dtype of ["f32", "bf16"] as const) {
        const mk = kn.mark();
        const A = randn(m * lda, seed++), B = randn(k * n, seed++), C0 = randn(m * ldc, seed++);
        const a = kn.alloc(m * lda), c1 = kn.alloc(m * ldc), c2 = kn.alloc(m * ldc);
        kn.write(a, A);
        kn.write(c1, C0);
        kn.write(c2, C0);
        const packed = kn.uploadPacked(B, k, n, dtype);
        const Bt = transpose(dtype === "bf16" ? B.map(bf16) : B, k, n);
        const packedT = kn.uploadPacked(Bt, n, k);
        const opts = { lda: t.lda, ldc: t.ldc, accumulate: t.acc };
        kn.matmulBT(a, packed, c1, m, k, n, { ...opts, bDtype: dtype });
        kn.matmul(a, packedT, c2, m, n, k, opts);
        const what = `${JSON.stringify(t)} ${dtype}`;
        const got = kn.read(c1, m * ldc);
        bitsEqual(got, kn.read(c2, m * ldc), what);
        // and against float64 (so the equality is not between two wrong results)
        for (let i = 0; i < m; i += Math.max(1, m >> 3)) {
          for (let j = 0; j < k; j++) {
            let want = t.acc ? C0[i * ldc + j] : 0, abs = Math.abs(want);
            for (let p = 0; p < n; p++) {
              const prod = A[i * lda + p] * Bt[p * k + j];
              want += prod;
              abs += Math.abs(prod);
            }
            close(got[i * ldc + j], want, (n + 2) * U * abs, `${what} C[${i},${j}]`);
          }
        }
        kn.release(mk);
      }
    }
  });

  Deno.test(`[${build.name}] matmulBT row ranges touch only those rows`, { ignore }, async () => {
    const kn = await load();
    const mk = kn.mark();
    const m = 23, k = 12, n = 37;
    const a = kn.alloc(m * n), c = kn.alloc(m * k), whole = kn.alloc(m * k);
    kn.write(a, randn(m * n, 5));
    const C0 = randn(m * k, 6);
    kn.write(c, C0);
    const packed = kn.uploadPacked(randn(k * n, 7), k, n);
    kn.matmulBT(a, packed, whole, m, k, n);
    kn.matmulBT(a, packed, c, m, k, n, { rowStart: 5, rowEnd: 18 });
    const got = kn.read(c, m * k), ref = kn.read(whole, m * k);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < k; j++) {
        const want = i >= 5 && i < 18 ? ref[i * k + j] : C0[i * k + j];
        assert.equal(got[i * k + j], want, `C[${i},${j}]`);
      }
    }
    kn.release(mk);
  });

  Deno.test(`[${build.name}] normBackward matches float64 differences (LayerNorm, RMSNorm)`, {
    ignore,
  }, async () => {
    const kn = await load();
    const rows = 5, d = 37, eps = 1e-5;
    for (const center of [true, false]) {
      for (const withGamma of [false, true]) {
        const mk = kn.mark();
        const X = randn(rows * d, 11, 2, 0.5), G = randn(rows * d, 12), gam = randn(d, 13, 1, 1);
        const DX0 = randn(rows * d, 14);
        const x = kn.alloc(rows * d), g = kn.alloc(rows * d), gamma = kn.alloc(d);
        const dx = kn.alloc(rows * d), dxAcc = kn.alloc(rows * d), ds = kn.alloc(rows);
        kn.write(x, X);
        kn.write(g, G);
        kn.write(gamma, gam);
        kn.write(dxAcc, DX0);
        const opts = { gamma: withGamma ? gamma : undefined, center };
        kn.normBackward(x, g, dx, rows, d, eps, { ...opts, dScale: ds });
        kn.normBackward(x, g, dxAcc, rows, d, eps, { ...opts, accumulate: true });
        const got = kn.read(dx, rows * d), gotAcc = kn.read(dxAcc, rows * d);
        const gotScale = kn.read(ds, rows);
        const what = `center ${center}, gamma ${withGamma}`;
        for (let r = 0; r < rows; r++) {
          const xr = Array.from(X.subarray(r * d, (r + 1) * d));
          const gr = Array.from(G.subarray(r * d, (r + 1) * d));
          const loss = (v: number[]) => {
            const mean = center ? v.reduce((a, b) => a + b, 0) / d : 0;
            const c = v.map((t) => t - mean);
            const s = Math.sqrt(c.reduce((a, b) => a + b * b, 0) / d + eps);
            return c.reduce((a, ci, j) => a + gr[j] * (ci / s) * (withGamma ? gam[j] : 1), 0);
          };
          // dL/ds: y depends on s as c / s, so d/ds sum g y = -sum g gamma c / s^2
          const mean = center ? xr.reduce((a, b) => a + b, 0) / d : 0;
          const c = xr.map((t) => t - mean);
          const s = Math.sqrt(c.reduce((a, b) => a + b * b, 0) / d + eps);
          let dsRef = 0, dsAbs = 0;
          c.forEach((ci, j) => {
            const t = gr[j] * (withGamma ? gam[j] : 1) * ci / (s * s);
            dsRef -= t;
            dsAbs += Math.abs(t);
          });
          close(gotScale[r], dsRef, 8 * U * dsAbs, `${what}: dScale[${r}]`);
          // dL/dx by central differences in float64 (error ~1e-10 here)
          const h = 1e-4;
          let scale = 0;
          const ref = xr.map((_, j) => {
            const up = xr.slice(), dn = xr.slice();
            up[j] += h;
            dn[j] -= h;
            const v = (loss(up) - loss(dn)) / (2 * h);
            scale = Math.max(scale, Math.abs(v));
            return v;
          });
          ref.forEach((want, j) => {
            close(got[r * d + j], want, 1e-6 * scale, `${what}: dx[${r},${j}]`);
            const acc = DX0[r * d + j] + want;
            close(gotAcc[r * d + j], acc, 1e-6 * scale + U * Math.abs(acc), `${what}: +dx`);
          });
        }
        kn.release(mk);
      }
    }
  });

  Deno.test(`[${build.name}] normBackward with a given scale gradient`, { ignore }, async () => {
    const kn = await load();
    const mk = kn.mark();
    const rows = 3, d = 24, eps = 1e-5;
    const X = randn(rows * d, 21, 1.5), G = randn(rows * d, 22), DS = randn(rows, 23);
    const x = kn.alloc(rows * d), g = kn.alloc(rows * d), dx = kn.alloc(rows * d);
    const ds = kn.alloc(rows), dx0 = kn.alloc(rows * d), ds0 = kn.alloc(rows);
    kn.write(x, X);
    kn.write(g, G);
    kn.write(ds, DS);
    kn.normBackward(x, g, dx, rows, d, eps, { dScale: ds, scaleGiven: true });
    kn.normBackward(x, g, dx0, rows, d, eps, { dScale: ds0 });
    // dx(given) = dx(own) + (given - own) ds/dx, ds/dx_j = c_j / (d s) (LayerNorm: mean(c) = 0)
    const got = kn.read(dx, rows * d), own = kn.read(dx0, rows * d), dsOwn = kn.read(ds0, rows);
    for (let r = 0; r < rows; r++) {
      const xr = Array.from(X.subarray(r * d, (r + 1) * d));
      const mean = xr.reduce((a, b) => a + b, 0) / d;
      const c = xr.map((t) => t - mean);
      const s = Math.sqrt(c.reduce((a, b) => a + b * b, 0) / d + eps);
      for (let j = 0; j < d; j++) {
        const want = own[r * d + j] + (DS[r] - dsOwn[r]) * c[j] / (d * s);
        close(got[r * d + j], want, 1e-6 * (Math.abs(want) + 1), `dx[${r},${j}]`);
      }
    }
    assert.deepEqual(Array.from(kn.read(ds, rows)), Array.from(DS), "a given dScale is read only");
    kn.release(mk);
  });

  Deno.test(`[${build.name}] activationBackward matches gelu_new' in float64 (tanh form)`, {
    ignore,
  }, async () => {
    const kn = await load();
    const mk = kn.mark();
    const X = new Float32Array([
      ...randn(1001, 31, 3),
      0,
      -0,
      1e-30,
      -1e-30,
      -8,
      -30,
      -100,
      8,
      30,
      100,
    ]);
    const G = randn(X.length, 32);
    const x = kn.alloc(X.length), g = kn.alloc(X.length), out = kn.alloc(X.length);
    kn.write(x, X);
    kn.write(g, G);
    kn.activationBackward("gelu_new", x, g, out, X.length);
    const got = kn.read(out, X.length);
    const c = Math.sqrt(2 / Math.PI);
    X.forEach((v, i) => {
      const u = c * (v + 0.044715 * v ** 3), du = c * (1 + 3 * 0.044715 * v * v);
      // 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) u'; in the tails 1 - tanh^2 cancels in float64,
      // so there the same value in its logistic form (e = exp(-2|u|): 1 - tanh^2 u =
      // 4 e / (1 + e)^2, 0.5 (1 + tanh u) = 1 / (1 + e) for u > 0, e / (1 + e) for u < 0)
      const th = Math.tanh(u), e = Math.exp(-2 * Math.abs(u));
      const d = Math.abs(u) < 1
        ? 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * du
        : (u > 0 ? 1 : e) / (1 + e) + 2 * v * (e / (1 + e) ** 2) * du;
      const want = d * G[i];
      close(got[i], want, 4 * U * Math.abs(want) + 1e-30, `gelu' at ${v}`);
    });
    // in place over dy
    kn.activationBackward("gelu_new", x, g, g, X.length);
    bitsEqual(kn.read(g, X.length), got, "in place");
    kn.release(mk);
  });

  Deno.test(`[${build.name}] attention backward steps match float64 (GQA, left padding)`, {
    ignore,
  }, async () => {
    const kn = await load();
    let seed = 200;
    for (const c of attnCases) {
      const { T, nHeads, dHead, group, kStart } = c;
      const r = attnInputs(c, seed);
      seed += 2;
      const mk = kn.mark();
      const qkv = kn.alloc(T * r.W), dz = kn.alloc(T * r.D), P = kn.alloc(nHeads * T * T);
      const dP = kn.alloc(nHeads * T * T), dS = kn.alloc(nHeads * T * T);
      const dqkv = kn.alloc(T * r.W);
      kn.write(qkv, r.qkv);
      kn.write(dz, r.dz);
      kn.write(P, r.P);
      const what = JSON.stringify(c);
      for (const fullRows of [true, false]) {
        kn.attentionGradPattern({
          dz,
          dzStride: r.D,
          v: qkv + (r.D + r.nKv * dHead) * 4,
          stride: r.W,
          pattern: P,
          dPattern: dP,
          dv: dqkv + (r.D + r.nKv * dHead) * 4,
          dStride: r.W,
          T,
          nHeads,
          dHead,
          group,
          kStart,
          fullRows,
        });
        const gotDP = kn.read(dP, nHeads * T * T), gotD = kn.read(dqkv, T * r.W);
        for (let h = 0; h < nHeads; h++) {
          const g = Math.floor(h / group);
          for (let i = 0; i < T; i++) {
            for (let j = 0; j < T; j++) {
              const seen = j >= kStart && j <= i;
              let want = 0, abs = 0;
              if (fullRows || seen) {
                for (let d = 0; d < dHead; d++) {
                  const t = r.dz[i * r.D + h * dHead + d] * r.v(j, g, d);
                  want += t;
                  abs += Math.abs(t);
                }
              }
              close(gotDP[(h * T + i) * T + j], want, (dHead + 2) * U * abs, `${what} dP`);
            }
          }
        }
        for (let g = 0; g < r.nKv; g++) {
          for (let j = 0; j < T; j++) {
            for (let d = 0; d < dHead; d++) {
              let want = 0, abs = 0;
              for (let h = g * group; h < (g + 1) * group; h++) {
                for (let i = 0; i < T; i++) {
                  const t = r.P[(h * T + i) * T + j] * r.dz[i * r.D + h * dHead + d];
                  want += t;
                  abs += Math.abs(t);
                }
              }
              const got = gotD[j * r.W + r.D + r.nKv * dHead + g * dHead + d];
              close(got, want, (group * T + 2) * U * abs, `${what} dv[${j}]`);
            }
          }
        }
      }
      // step 2 from the kernel's own dP (causal rows)
      kn.softmaxBackwardRows(P, dP, dS, nHeads, T);
      const dPv = kn.read(dP, nHeads * T * T), gotDS = kn.read(dS, nHeads * T * T);
      for (let row = 0; row < nHeads * T; row++) {
        let s = 0, abs = 0;
        for (let j = 0; j < T; j++) {
          s += r.P[row * T + j] * dPv[row * T + j];
          abs += Math.abs(r.P[row * T + j] * dPv[row * T + j]);
        }
        for (let j = 0; j < T; j++) {
          const p = r.P[row * T + j], want = p * (dPv[row * T + j] - s);
          const tol = 2 * U * Math.abs(want) + 4 * U * p * (abs + Math.abs(dPv[row * T + j]));
          close(gotDS[row * T + j], want, tol + 1e-300, `${what} dS`);
        }
      }
      // step 3 from the kernel's dS
      kn.attentionGradQK({
        dScores: dS,
        q: qkv,
        k: qkv + r.D * 4,
        stride: r.W,
        dq: dqkv,
        dk: dqkv + r.D * 4,
        dStride: r.W,
        T,
        nHeads,
        dHead,
        scale: r.scale,
        group,
        kStart,
      });
      const gotQK = kn.read(dqkv, T * r.W);
      for (let h = 0; h < nHeads; h++) {
        const g = Math.floor(h / group);
        for (let i = 0; i < T; i++) {
          for (let d = 0; d < dHead; d++) {
            let want = 0, abs = 0;
            for (let j = kStart; j <= i; j++) {
              const t = gotDS[(h * T + i) * T + j] * r.k(j, g, d);
              want += t;
              abs += Math.abs(t);
            }
            const got = gotQK[i * r.W + h * dHead + d];
            close(got, want * r.scale, ((T + 3) * U * abs) * r.scale, `${what} dq`);
          }
        }
      }
      for (let g = 0; g < r.nKv; g++) {
        for (let j = 0; j < T; j++) {
          for (let d = 0; d < dHead; d++) {
            let want = 0, abs = 0;
            for (let h = g * group; h < (g + 1) * group; h++) {
              for (let i = Math.max(j, kStart); i < T; i++) {
                const t = gotDS[(h * T + i) * T + j] * r.q(i, h, d);
                want += t;
                abs += Math.abs(t);
              }
            }
            const got = gotQK[j * r.W + r.D + g * dHead + d];
            close(got, want * r.scale, (group * T + 3) * U * abs * r.scale, `${what} dk`);
          }
        }
      }
      kn.release(mk);
    }
  });

  Deno.test(`[${build.name}] crossEntropyGradRows matches float64`, { ignore }, async () => {
    const kn = await load();
    const mk = kn.mark();
    const rows = 4, n = 1003, ld = 1010;
    const X = randn(rows * ld, 41, 4);
    const coef = new Float32Array([0.25, -0.5, 1, 0.125]);
    const target = new Int32Array([3, 1002, -1, 0]);
    const x = kn.alloc(rows * ld), out = kn.alloc(rows * n);
    kn.write(x, X);
    const lse = kn.crossEntropyGradRows(x, rows, n, coef, target, out, ld);
    const got = kn.read(out, rows * n);
    for (let r = 0; r < rows; r++) {
      const row = Array.from(X.subarray(r * ld, r * ld + n));
      const mx = Math.max(...row);
      const sum = row.reduce((a, v) => a + Math.exp(v - mx), 0);
      close(lse[r], mx + Math.log(sum), 1e-6, `lse[${r}]`);
      for (let j = 0; j < n; j++) {
        const want = coef[r] * Math.exp(row[j] - mx) / sum - (j === target[r] ? coef[r] : 0);
        close(got[r * n + j], want, 8 * U * Math.abs(coef[r]) * (Math.abs(want) + 1e-3), "grad");
      }
    }
    // in place
    kn.crossEntropyGradRows(x, rows, n, coef, target, x, ld, ld);
    const inPlace = kn.read(x, rows * ld);
    for (let r = 0; r < rows; r++) {
      bitsEqual(inPlace.subarray(r * ld, r * ld + n), got.subarray(r * n, (r + 1) * n), "alias");
    }
    kn.release(mk);
  });

  Deno.test(`[${build.name}] 2 threads give bit-identical backward kernels`, {
    ignore,
  }, async () => {
    await runBoth(build.relaxed, (kn) => {
      const out = [];
      // matmulBT split by panels (k = 768: 96 panels) and by rows (k = 20: 3 panels)
      for (const [m, k, n, dtype] of [[101, 768, 300, "f32"], [203, 20, 900, "bf16"]] as const) {
        const a = kn.alloc(m * n), c = kn.alloc(m * k);
        kn.write(a, randn(m * n, m));
        kn.write(c, randn(m * k, k));
        const packed = kn.uploadPacked(randn(k * n, m + k), k, n, dtype);
        kn.matmulBT(a, packed, c, m, k, n, { accumulate: true, bDtype: dtype });
        out.push({ ptr: c, n: m * k, what: `matmulBT ${m}x${k}x${n} ${dtype}` });
      }
      const rows = 300, d = 768;
      const x = kn.alloc(rows * d), g = kn.alloc(rows * d), gam = kn.alloc(d);
      const dx = kn.alloc(rows * d), ds = kn.alloc(rows);
      kn.write(x, randn(rows * d, 1, 2, 1));
      kn.write(g, randn(rows * d, 2));
      kn.write(gam, randn(d, 3));
      kn.normBackward(x, g, dx, rows, d, 1e-5, { gamma: gam, dScale: ds });
      out.push({ ptr: dx, n: rows * d, what: "normBackward" }, {
        ptr: ds,
        n: rows,
        what: "normBackward scale",
      });
      const n = 100003;
      const u = kn.alloc(n), w = kn.alloc(n);
      kn.write(u, randn(n, 4, 3));
      kn.write(w, randn(n, 5));
      kn.activationBackward("gelu_new", u, w, w, n);
      out.push({ ptr: w, n, what: "activationBackward gelu_new" });
      const c: AttnCase = { T: 60, nHeads: 12, dHead: 64, group: 1, kStart: 0 };
      const r = attnInputs(c, 9);
      const qkv = kn.alloc(60 * r.W), dz = kn.alloc(60 * r.D), P = kn.alloc(12 * 3600);
      const dP = kn.alloc(12 * 3600), dqkv = kn.alloc(60 * r.W);
      kn.write(qkv, r.qkv);
      kn.write(dz, r.dz);
      kn.write(P, r.P);
      const vOff = (r.D + r.nKv * c.dHead) * 4;
      kn.attentionGradPattern({
        dz,
        dzStride: r.D,
        v: qkv + vOff,
        stride: r.W,
        pattern: P,
        dPattern: dP,
        dv: dqkv + vOff,
        dStride: r.W,
        ...c,
        fullRows: true,
      });
      out.push({ ptr: dP, n: 12 * 3600, what: "attentionGradPattern dP" });
      kn.softmaxBackwardRows(P, dP, dP, 12, 60);
      out.push({ ptr: dP, n: 12 * 3600, what: "softmaxBackwardRows" });
      kn.attentionGradQK({
        dScores: dP,
        q: qkv,
        k: qkv + r.D * 4,
        stride: r.W,
        dq: dqkv,
        dk: dqkv + r.D * 4,
        dStride: r.W,
        ...c,
        scale: r.scale,
      });
      out.push({ ptr: dqkv, n: 60 * r.W, what: "attention dq|dk|dv" });
      const L = kn.alloc(70 * 5000), G = kn.alloc(70 * 5000);
      kn.write(L, randn(70 * 5000, 6, 3));
      kn.crossEntropyGradRows(
        L,
        70,
        5000,
        new Float32Array(70).fill(1 / 70),
        Int32Array.from({ length: 70 }, (_, i) => i * 7),
        G,
      );
      out.push({ ptr: G, n: 70 * 5000, what: "crossEntropyGradRows" });
      return out;
    });
  });
}
