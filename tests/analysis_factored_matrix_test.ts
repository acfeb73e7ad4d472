/**
 * FactoredMatrix against materialised products on small random matrices, in JavaScript and on
 * the WebAssembly kernels; streamed top-1 accuracy against a materialised argmax.
 */
import assert from "node:assert/strict";
import { FactoredMatrix, InputError, KernelError, top1Accuracy } from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { SeededRng } from "../core/rng.ts";

function random(rows: number, cols: number, seed: number): Tensor {
  const data = new Float32Array(rows * cols);
  new SeededRng(seed, "fm-test").fillNormal(data);
  return { data, shape: [rows, cols] };
}

/** Reference product in float64. */
function dense(a: Tensor, b: Tensor): Float64Array {
  const [m, k] = a.shape, [, n] = b.shape;
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a.data[i * k + p] * b.data[p * n + j];
      out[i * n + j] = s;
    }
  }
  return out;
}

function t64(x: Float64Array, shape: number[]): Tensor {
  return { data: Float32Array.from(x), shape };
}

function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol = 1e-4,
  what = "",
) {
  assert.equal(actual.length, expected.length, `${what}: lengths`);
  let scale = 1;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  for (let i = 0; i < expected.length; i++) {
    if (!(Math.abs(actual[i] - expected[i]) <= tol * scale)) {
      assert.fail(`${what}[${i}]: ${actual[i]} vs ${expected[i]} (tolerance ${tol * scale})`);
    }
  }
}

const wasm = await WasmBackend.load();

for (const backend of ["js", "wasm"] as const) {
  const opts = backend === "wasm" ? { backend: wasm } : {};

  Deno.test(`FactoredMatrix (${backend}): AB, BA, T, shape, diag, row, corner`, () => {
    const A = random(300, 16, 1), B = random(16, 200, 2);
    const M = new FactoredMatrix(A, B, opts);
    assert.deepEqual(M.shape, [300, 200]);
    assert.equal(M.mdim, 16);
    const ref = dense(A, B);
    assertClose(M.AB.data, ref, 1e-5, "AB");
    assert.deepEqual(M.AB.shape, [300, 200]);
    const Mt = M.T;
    assert.deepEqual(Mt.shape, [200, 300]);
    const abT = Mt.AB.data;
    for (let i = 0; i < 300; i += 37) {
      for (let j = 0; j < 200; j += 13) assert.equal(abT[j * 300 + i], M.AB.data[i * 200 + j]);
    }
    const S = new FactoredMatrix(random(64, 8, 3), random(8, 64, 4), opts);
    assertClose(S.BA.data, dense(S.B, S.A), 1e-5, "BA");
    assert.deepEqual(S.BA.shape, [8, 8]);
    assert.throws(() => M.BA, InputError);
    const full = S.AB.data;
    assertClose(S.diag(), Array.from({ length: 64 }, (_, i) => full[i * 64 + i]), 1e-5, "diag");
    assertClose(S.row(5), full.subarray(5 * 64, 6 * 64), 1e-5, "row");
    assertClose(S.getCorner(3).data, [0, 1, 2, 64, 65, 66, 128, 129, 130].map((i) => full[i]));
    assertClose(S.rowSlice(10, 20).AB.data, full.subarray(640, 1280), 1e-5, "rowSlice");
    assert.equal(S.toString(), "FactoredMatrix: Shape([64, 64]), Hidden Dim(8)");
  });

  Deno.test(`FactoredMatrix (${backend}): products with matrices and factored matrices`, () => {
    // rdim > mdim folds into B; rdim <= mdim makes a dense left factor. Both must equal AB X.
    for (const [l, m, r, p] of [[40, 6, 50, 30], [40, 12, 8, 30]]) {
      const A = random(l, m, 10 + l + m), B = random(m, r, 20 + r);
      const M = new FactoredMatrix(A, B, opts);
      const AB = t64(dense(A, B), [l, r]);
      const X = random(r, p, 30);
      const MX = M.matmul(X);
      assert.deepEqual(MX.shape, [l, p]);
      assert.equal(MX.mdim, r > m ? m : r);
      assertClose(MX.AB.data, dense(AB, X), 1e-4, "M X");
      const Y = random(p, l, 31);
      const YM = M.rmatmul(Y);
      assert.deepEqual(YM.shape, [p, r]);
      assert.equal(YM.mdim, l > m ? m : l);
      assertClose(YM.AB.data, dense(Y, AB), 1e-4, "Y M");
      // Factored with factored, both sides.
      const N = new FactoredMatrix(random(r, 5, 40), random(5, 33, 41), opts);
      const NAB = t64(dense(N.A, N.B), [r, 33]);
      assertClose(M.matmul(N).AB.data, dense(AB, NAB), 1e-4, "M N");
      const P = new FactoredMatrix(random(17, 4, 42), random(4, l, 43), opts);
      const PAB = t64(dense(P.A, P.B), [17, l]);
      assertClose(M.rmatmul(P).AB.data, dense(PAB, AB), 1e-4, "P M");
      // Vectors.
      const v = random(r, 1, 50).data, w = random(1, l, 51).data;
      assertClose(M.matvec(v), dense(AB, { data: v, shape: [r, 1] }), 1e-4, "M v");
      assertClose(M.vecmat(w), dense({ data: w, shape: [1, l] }, AB), 1e-4, "w M");
      assertClose(M.scale(-2.5).AB.data, AB.data.map((x) => -2.5 * x), 1e-5, "scale");
      assert.throws(() => M.matmul(random(r + 1, 2, 1)), InputError);
      assert.throws(() => M.rmatmul(random(2, l + 1, 1)), InputError);
    }
  });

  Deno.test(`FactoredMatrix (${backend}): norm and SVD without materialising`, () => {
    // Tall-thin, rank-deficient (mdim > ldim), and wide cases.
    for (const [l, m, r] of [[120, 10, 90], [6, 10, 40], [50, 7, 5]]) {
      const A = random(l, m, 60 + l), B = random(m, r, 70 + r);
      const M = new FactoredMatrix(A, B, opts);
      const ref = dense(A, B);
      const fro = Math.sqrt(ref.reduce((s, x) => s + x * x, 0));
      assert.ok(Math.abs(M.norm() - fro) < 1e-6 * fro, `norm ${M.norm()} vs ${fro}`);
      const { U, S, Vh } = M.svd();
      const k = Math.min(l, m, r);
      assert.deepEqual(U.shape, [l, k]);
      assert.deepEqual(Vh.shape, [r, k]);
      assert.equal(S.length, k);
      for (let i = 1; i < k; i++) assert.ok(S[i] <= S[i - 1]);
      const sumSq = S.reduce((s, x) => s + x * x, 0);
      assert.ok(Math.abs(Math.sqrt(sumSq) - fro) < 1e-5 * fro);
      // U diag(S) Vh^T == AB, and U, Vh have orthonormal columns.
      const rebuilt = new Float64Array(l * r);
      for (let i = 0; i < l; i++) {
        for (let j = 0; j < r; j++) {
          let s = 0;
          for (let p = 0; p < k; p++) s += U.data[i * k + p] * S[p] * Vh.data[j * k + p];
          rebuilt[i * r + j] = s;
        }
      }
      assertClose(rebuilt, ref, 1e-5, "U S Vh^T");
      for (const [X, rows] of [[U, l], [Vh, r]] as const) {
        for (let p = 0; p < k; p++) {
          for (let q = 0; q < k; q++) {
            let s = 0;
            for (let i = 0; i < rows; i++) s += X.data[i * k + p] * X.data[i * k + q];
            assert.ok(Math.abs(s - (p === q ? 1 : 0)) < 1e-5, `orthonormality ${s}`);
          }
        }
      }
      assertClose(dense(U, M.collapseL()), ref, 1e-5, "U collapseL");
      const VhT = t64(dense({ data: Vh.data, shape: [r, k] }, t64(eye(k), [k, k])), [r, k]);
      const cr = M.collapseR();
      const rebuiltR = new Float64Array(l * r);
      for (let i = 0; i < l; i++) {
        for (let j = 0; j < r; j++) {
          let s = 0;
          for (let p = 0; p < k; p++) s += cr.data[i * k + p] * VhT.data[j * k + p];
          rebuiltR[i * r + j] = s;
        }
      }
      assertClose(rebuiltR, ref, 1e-5, "collapseR Vh^T");
      const even = M.makeEven();
      assertClose(dense(even.A, even.B), ref, 1e-5, "makeEven");
      assert.ok(
        Math.abs(even.A.data.reduce((s, x) => s + x * x, 0) - S.reduce((s, x) => s + x, 0)) < 1e-3,
      );
    }
  });

  Deno.test(`FactoredMatrix (${backend}): rowBlocks stream AB for any block size`, async () => {
    const A = random(45, 9, 80), B = random(9, 70, 81);
    const M = new FactoredMatrix(A, B, opts);
    const ref = dense(A, B);
    const before = wasm.bytesInUse;
    for (const size of [1, 7, 16, 45, 100]) {
      const got = new Float32Array(45 * 70);
      let next = 0;
      for await (const block of M.rowBlocks(size)) {
        assert.equal(block.start, next);
        assert.equal(block.rows, Math.min(size, 45 - next));
        assert.equal(block.data.length, block.rows * 70);
        got.set(block.data, block.start * 70);
        next += block.rows;
      }
      assert.equal(next, 45);
      assertClose(got, ref, 1e-5, `blocks of ${size}`);
    }
    for await (const block of M.rowBlocks(4)) if (block.start >= 8) break;
    assert.equal(wasm.bytesInUse, before, "memory released after the loop and after a break");
    await assert.rejects(() => Array.fromAsync(M.rowBlocks(0)), InputError);
  });

  Deno.test(`top1Accuracy (${backend}): streaming equals a materialised argmax, ties first`, async () => {
    const n = 203, k = 12;
    const A = random(n, k, 90);
    // B = A^T + noise makes many rows argmax on the diagonal; duplicate columns make ties.
    const B = random(k, n, 91);
    for (let p = 0; p < k; p++) {
      for (let j = 0; j < n; j++) B.data[p * n + j] = A.data[j * k + p] + 0.7 * B.data[p * n + j];
    }
    for (const j of [10, 50, 51, 120]) {
      for (let p = 0; p < k; p++) B.data[p * n + j + 1] = B.data[p * n + j];
    }
    const M = new FactoredMatrix(A, B, opts);
    const full = M.AB.data;
    let hits = 0;
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let j = 1; j < n; j++) if (full[i * n + j] > full[i * n + best]) best = j;
      if (best === i) hits++;
    }
    assert.ok(hits > n / 4 && hits < n, `hits ${hits}`);
    for (const blockRows of [1, 3, 16, 64, 200, 203, 500]) {
      const progress: number[] = [];
      const acc = await top1Accuracy(M, { blockRows, onProgress: (d, t) => progress.push(d / t) });
      assert.equal(acc, hits / n, `blockRows ${blockRows}`);
      assert.equal(progress.at(-1), 1);
      assert.equal(progress[0], 0);
    }
    // Exact ties: A = I so M = B exactly. Row i has its maximum 5 twice: at (i - 1, i) for even
    // i > 0 (the first maximum is i - 1: a miss), at (i, i + 1) for odd i (a hit).
    const size = 11;
    const I = { data: new Float32Array(size * size), shape: [size, size] };
    for (let i = 0; i < size; i++) I.data[i * size + i] = 1;
    const T = random(size, size, 92);
    let expected = 0;
    for (let i = 0; i < size; i++) {
      const row = T.data.subarray(i * size, (i + 1) * size).map((x) => Math.tanh(x));
      const pair = i % 2 === 1 ? [i, i + 1] : [i - 1, i];
      for (const j of pair) if (j >= 0 && j < size) row[j] = 5;
      if (i % 2 === 1 || i === 0) expected++;
      T.data.set(row, i * size);
    }
    const tiedM = new FactoredMatrix(I, T, opts);
    for (const blockRows of [1, 4, 11]) {
      assert.equal(await top1Accuracy(tiedM, { blockRows }), expected / size);
    }
    await assert.rejects(
      () => top1Accuracy(new FactoredMatrix(A, random(k, 5, 1), opts)),
      InputError,
    );
  });
}

function eye(k: number): Float64Array {
  const out = new Float64Array(k * k);
  for (let i = 0; i < k; i++) out[i * k + i] = 1;
  return out;
}

Deno.test("FactoredMatrix refuses to materialise above the cap, and validates shapes", () => {
  const M = new FactoredMatrix(random(1000, 2, 1), random(2, 1000, 2));
  const cap = FactoredMatrix.maxABElements;
  try {
    FactoredMatrix.maxABElements = 999_999;
    assert.throws(() => M.AB, InputError, "rowBlocks");
  } finally {
    FactoredMatrix.maxABElements = cap;
  }
  assert.equal(M.AB.data.length, 1_000_000);
  assert.throws(() => new FactoredMatrix(random(3, 4, 1), random(5, 3, 1)), InputError, "inner");
  assert.throws(
    () => new FactoredMatrix({ data: new Float32Array(2), shape: [2] }, random(2, 2, 1)),
    InputError,
    "at least 2 dimensions",
  );
  assert.throws(
    () => new FactoredMatrix(randomT([2, 3, 4], 1), randomT([3, 4, 5], 2)),
    InputError,
    "do not broadcast",
  );
});

function randomT(shape: number[], seed: number): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  new SeededRng(seed, "fm-batch").fillNormal(data);
  return { data, shape };
}

/** Matrix i of a [..., r, c] tensor. */
function part(t: Tensor, i: number): Tensor {
  const [r, c] = t.shape.slice(-2);
  return { data: t.data.slice(i * r * c, (i + 1) * r * c), shape: [r, c] };
}

Deno.test("FactoredMatrix with leading dimensions: broadcast factors, get, per-matrix results", async () => {
  // A [2, 3, 6, 4] and B [3, 4, 5] broadcast to M [2, 3, 6, 5].
  const A = randomT([2, 3, 6, 4], 1), B = randomT([3, 4, 5], 2);
  const M = new FactoredMatrix(A, B);
  assert.deepEqual(M.shape, [2, 3, 6, 5]);
  assert.equal(M.ndim, 4);
  assert.equal(M.toString(), "FactoredMatrix: Shape([2, 3, 6, 5]), Hidden Dim(4)");
  const AB = M.AB;
  assert.deepEqual(AB.shape, [2, 3, 6, 5]);
  for (const [i, j] of [[0, 0], [1, 2], [1, 0]]) {
    const ref = dense(part(A, i * 3 + j), part(B, j));
    assertClose(part(AB, i * 3 + j).data, ref, 1e-6, `AB[${i}, ${j}]`);
    const one = M.get(i, j);
    assert.deepEqual(one.shape, [6, 5]);
    assertClose(one.AB.data, ref, 1e-6, `get(${i}, ${j})`);
    assertClose([M.norms().data[i * 3 + j]], [one.norm()], 1e-6, "norms");
  }
  assert.deepEqual(M.get(null, -1).shape, [2, 6, 5]);
  assertClose(M.get(null, -1).get(1).AB.data, dense(part(A, 5), part(B, 2)), 1e-6, "get(null, -1)");
  // One more index picks rows (kept), two more rows and columns, as TL.
  const rowsM = M.get(1, 2, 4);
  assert.deepEqual(rowsM.shape, [1, 5]);
  const full = dense(part(A, 5), part(B, 2));
  assertClose(rowsM.AB.data, full.slice(20, 25), 1e-6, "row");
  assertClose(M.get(1, 2, -1, 3).AB.data, [full[5 * 5 + 3]], 1e-6, "entry");
  assert.throws(() => M.get(2), InputError, "outside");
  assert.throws(() => M.get(0, 0, 0, 0, 0), InputError, "indices");
  // Transpose, products (leading dimensions broadcast), unsqueeze, SVD per matrix.
  assertClose(M.T.get(1, 1).AB.data, transposeData(dense(part(A, 4), part(B, 1)), 6, 5), 1e-6, "T");
  const X = randomT([5, 7], 3);
  assertClose(
    M.matmul(X).get(0, 1).AB.data,
    dense(t64(dense(part(A, 1), part(B, 1)), [6, 5]), X),
    1e-5,
    "matmul",
  );
  const Y = randomT([3, 2, 6], 4);
  assertClose(
    M.rmatmul(Y).get(1, 0).AB.data,
    dense(part(Y, 0), t64(dense(part(A, 3), part(B, 0)), [6, 5])),
    1e-5,
    "rmatmul",
  );
  assert.deepEqual(M.unsqueeze(1).shape, [2, 1, 3, 6, 5]);
  const svd = M.svd();
  assert.deepEqual(svd.U.shape, [2, 3, 6, 4]);
  assert.equal(svd.S.length, 2 * 3 * 4);
  assertClose(svd.S.slice(4 * 4, 5 * 4), M.get(1, 1).S, 1e-6, "S of matrix [1, 1]");
  assertClose(part(M.collapseL(), 2).data, M.get(0, 2).collapseL().data, 1e-6, "collapseL");
  assertClose(M.makeEven().AB.data, AB.data, 1e-4, "makeEven");
  // Single-matrix methods say how to pick one.
  assert.throws(() => M.norm(), InputError, "get(");
  await assert.rejects(() => Array.fromAsync(M.rowBlocks()), InputError, "get(");
});

function transposeData(x: Float64Array, r: number, c: number): Float64Array {
  const out = new Float64Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = x[i * c + j];
  return out;
}

Deno.test("FactoredMatrix eigenvalues: those of B A, complex pairs included", () => {
  // A rotation scaled by 2 in the first two coordinates of a 3 x 3 matrix of rank 2.
  const A = { data: Float32Array.of(1, 0, 0, 1, 0, 0), shape: [3, 2] };
  const B = { data: Float32Array.of(0, -2, 0, 2, 0, 0), shape: [2, 3] };
  const { re, im } = new FactoredMatrix(A, B).eigenvalues;
  assert.deepEqual(Array.from(re.data), [0, 0]);
  assert.deepEqual(Array.from(im.data), [2, -2]);
  // By hand: the block [[2, 1], [-1, 2]] has 2 +- i, then 3 and -1; by magnitude 3, 2+i, 2-i, -1.
  const D = {
    data: Float32Array.of(2, 1, 0, 0, -1, 2, 0, 0, 0, 0, 3, 0, 0, 0, 0, -1),
    shape: [4, 4],
  };
  const I = { data: Float32Array.from(eye(4)), shape: [4, 4] };
  const e = new FactoredMatrix(D, I).eigenvalues;
  assertClose(e.re.data, [3, 2, 2, -1], 1e-6, "re");
  assertClose(e.im.data, [0, 1, -1, 0], 1e-6, "im");
  assert.throws(() => new FactoredMatrix(random(3, 2, 1), random(2, 4, 1)).eigenvalues, InputError);
});

Deno.test("rowBlocks on a backend: an outer scope cannot allocate while the stream is open", async () => {
  const M = new FactoredMatrix(random(20, 3, 1), random(3, 20, 2), { backend: wasm });
  const before = wasm.bytesInUse;
  {
    using outer = wasm.scope();
    let blocks = 0;
    for await (const _ of M.rowBlocks(5)) {
      blocks++;
      assert.throws(() => outer.alloc(1000), KernelError, "an inner one is open");
      using inner = wasm.scope(); // the model's passes open and close scopes like this
      inner.alloc(1000);
    }
    assert.equal(blocks, 4);
    outer.alloc(1000); // the stream's scope is closed after the loop
  }
  assert.equal(wasm.bytesInUse, before);
});
