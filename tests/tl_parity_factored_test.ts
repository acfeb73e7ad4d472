/**
 * Issue 20, item 5: FactoredMatrix as TransformerLens 3 has it: `V` (with `Vh` kept), indexing
 * with lists and ranges (`M[:, :, [0, 1]]`), products whose leading dimensions broadcast across
 * both operands, `matvec` / `vecmat` with leading dimensions, and `scale` refusing what is not a
 * number. References are float64 products written as loops over the broadcast multi-indices (the
 * definition of M = A B and of torch's `@`), never this class's own output. Tolerance 1e-5
 * relative to the largest entry: float32 products of at most 8 unit-normal terms.
 */
import assert from "node:assert/strict";
import { FactoredMatrix, InputError } from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { SeededRng } from "../core/rng.ts";

function random(shape: number[], seed: number): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  new SeededRng(seed, "factored-test").fillNormal(data);
  return { data, shape };
}

function* indices(shape: readonly number[]): Generator<number[]> {
  const n = shape.reduce((a, b) => a * b, 1);
  const idx = new Array<number>(shape.length).fill(0);
  for (let k = 0; k < n; k++) {
    yield [...idx];
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

/** t at a multi-index of the broadcast shape (leading axes aligned right, length-1 axes stretch). */
function at(t: Tensor, idx: readonly number[]): number {
  const off = idx.length - t.shape.length;
  let o = 0;
  t.shape.forEach((d, i) => o = o * d + (d === 1 ? 0 : idx[i + off]));
  return t.data[o];
}

/** A dense float64 tensor: shape and a value function. */
interface Dense {
  shape: number[];
  value: (idx: number[]) => number;
}

function broadcast(a: number[], b: number[]): number[] {
  const n = Math.max(a.length, b.length);
  return Array.from({ length: n }, (_, i) => {
    const x = a[i - n + a.length] ?? 1, y = b[i - n + b.length] ?? 1;
    return x === 1 ? y : x;
  });
}

/** X Y by torch's `@` on leading dims that broadcast, in float64. */
function product(x: Dense, y: Dense): Dense {
  const [l, m] = x.shape.slice(-2), r = y.shape.at(-1)!;
  const lead = broadcast(x.shape.slice(0, -2), y.shape.slice(0, -2));
  const ix = (
    idx: number[],
    i: number,
    k: number,
  ) => [...idx.slice(idx.length - (x.shape.length - 2)), i, k];
  const iy = (
    idx: number[],
    k: number,
    j: number,
  ) => [...idx.slice(idx.length - (y.shape.length - 2)), k, j];
  const fx = (idx: number[]) => idx.map((v, d) => x.shape[d] === 1 ? 0 : v);
  const fy = (idx: number[]) => idx.map((v, d) => y.shape[d] === 1 ? 0 : v);
  return {
    shape: [...lead, l, r],
    value: (idx) => {
      const head = idx.slice(0, -2), [i, j] = idx.slice(-2);
      let s = 0;
      for (let k = 0; k < m; k++) s += x.value(fx(ix(head, i, k))) * y.value(fy(iy(head, k, j)));
      return s;
    },
  };
}

const dense = (t: Tensor): Dense => ({ shape: t.shape, value: (idx) => at(t, idx) });

function assertClose(got: Tensor, want: Dense, what: string) {
  assert.deepEqual(got.shape, want.shape, `${what}: shape`);
  let scale = 0;
  for (const idx of indices(want.shape)) scale = Math.max(scale, Math.abs(want.value(idx)));
  for (const idx of indices(want.shape)) {
    const w = want.value(idx), g = at(got, idx);
    if (!(Math.abs(g - w) <= 1e-5 * Math.max(1, scale))) {
      assert.fail(`${what}[${idx}]: ${g} vs ${w}`);
    }
  }
}

Deno.test("V (TL 3) and Vh: M = U diag(S) V^T, in float64", () => {
  const A = random([6, 3], 1), B = random([3, 5], 2);
  const M = new FactoredMatrix(A, B);
  assert.equal(M.V, M.Vh);
  const { U, S, V } = { U: M.U, S: M.S, V: M.V };
  const r = S.length;
  assert.deepEqual(V.shape, [5, r]);
  assertClose(
    {
      data: Float32Array.from({ length: 30 }, (_, k) => {
        const i = Math.floor(k / 5), j = k % 5;
        let s = 0;
        for (let p = 0; p < r; p++) s += U.data[i * r + p] * S[p] * V.data[j * r + p];
        return s;
      }),
      shape: [6, 5],
    },
    product(dense(A), dense(B)),
    "U S V^T",
  );
});

Deno.test("get with lists and ranges: M[:, :, [0, 1]], M[1, 0:2, :, ::2], as indexing the dense M", () => {
  // A broadcasts its first leading dim (length 1), B its second: M is [3, 4, 5, 6].
  const A = random([1, 4, 5, 2], 3), B = random([3, 1, 2, 6], 4);
  const M = new FactoredMatrix(A, B);
  const full = product(dense(A), dense(B));
  assert.deepEqual(M.shape, [3, 4, 5, 6]);
  const cases: {
    args: Parameters<FactoredMatrix["get"]>;
    shape: number[];
    map: (i: number[]) => number[];
  }[] = [
    { args: [null, [0, 3]], shape: [3, 2, 5, 6], map: ([a, b, r, c]) => [a, [0, 3][b], r, c] },
    {
      args: [[2, 0], null, [1, -1]],
      shape: [2, 4, 2, 6],
      map: ([a, b, r, c]) => [[2, 0][a], b, [1, 4][r], c],
    },
    {
      args: [1, { start: 0, stop: 2 }, null, { step: 2 }],
      shape: [2, 5, 3],
      map: ([b, r, c]) => [1, b, r, 2 * c],
    },
    { args: [-1, { start: 1 }, 4], shape: [3, 1, 6], map: ([b, , c]) => [2, 1 + b, 4, c] },
    {
      args: [null, null, null, [5, 0]],
      shape: [3, 4, 5, 2],
      map: ([a, b, r, c]) => [a, b, r, [5, 0][c]],
    },
  ];
  for (const { args, shape, map } of cases) {
    const sub = M.get(...args);
    assertClose(
      sub.AB,
      { shape, value: (i) => full.value(map(i)) },
      `get(${JSON.stringify(args)})`,
    );
  }
  assert.throws(
    () => M.get([0, 3]),
    (e) =>
      e instanceof InputError && /dimension 0 index \[0,3\] does not fit length 3/.test(e.message),
  );
  assert.throws(
    () => M.get(0, { start: 0, stop: 2, by: 1 } as never),
    (e) =>
      e instanceof InputError && /\{"start":0,"stop":2,"by":1\}/.test(e.message) &&
      !/object Object/.test(e.message),
  );
  assert.throws(() => M.get(0, 0, 0, 0, 0), /5 indices/);
});

Deno.test("products broadcast the leading dims of both operands, as torch's @", () => {
  const M = new FactoredMatrix(random([2, 1, 4, 3], 5), random([3, 4], 6)); // [2, 1, 4, 4]
  const dM = product(dense(M.A), dense(M.B));
  for (
    const [i, X] of [random([5, 4, 6], 7), random([5, 4, 2], 8), random([1, 3, 4, 4], 9)].entries()
  ) {
    assertClose(M.matmul(X).AB, product(dM, dense(X)), `M @ X ${i}`);
    const Y = random([...X.shape.slice(0, -2), 6, 4], 10 + i);
    assertClose(M.rmatmul(Y).AB, product(dense(Y), dM), `Y @ M ${i}`);
  }
  // Two factored matrices, each with its own leading dims.
  const N = new FactoredMatrix(random([3, 4, 2], 11), random([1, 2, 5], 12)); // [3, 4, 5]
  const dN = product(dense(N.A), dense(N.B));
  const MN = M.matmul(N);
  assert.deepEqual(MN.shape, [2, 3, 4, 5]);
  assertClose(MN.AB, product(dM, dN), "M @ N");
  assertClose(N.rmatmul(M).AB, product(dM, dN), "N.rmatmul(M)");
  assertClose(M.T.rmatmul(N.T).T.AB, product(dM, dN), "((M N)^T)^T");
});

Deno.test("matvec / vecmat with leading dims: [..., ldim] / [..., rdim], vectors broadcast", () => {
  const A = random([2, 3, 4, 2], 13), B = random([2, 5], 14);
  const M = new FactoredMatrix(A, B); // [2, 3, 4, 5]
  const dM = product(dense(A), dense(B));
  const v = random([5], 15);
  const flat = M.matvec(v.data);
  assert.ok(flat instanceof Float32Array);
  const asCol = (t: Tensor): Dense => ({
    shape: [...t.shape, 1],
    value: (i) => at(t, i.slice(0, -1)),
  });
  const want = product(dM, asCol(v));
  assertClose({ data: flat, shape: [2, 3, 4, 1] }, want, "M v (one vector)");
  const vs = random([3, 5], 16); // one vector per matrix of the second leading dim
  const mv = M.matvec(vs);
  assert.deepEqual(mv.shape, [2, 3, 4]);
  assertClose({ data: mv.data, shape: [2, 3, 4, 1] }, product(dM, asCol(vs)), "M v (broadcast)");
  const u = random([3, 4], 17);
  const vm = M.vecmat(u);
  assert.deepEqual(vm.shape, [2, 3, 5]);
  const asRow = (t: Tensor): Dense => ({
    shape: [...t.shape.slice(0, -1), 1, t.shape.at(-1)!],
    value: (i) => at(t, [...i.slice(0, -2), i.at(-1)!]),
  });
  assertClose({ data: vm.data, shape: [2, 3, 1, 5] }, product(asRow(u), dM), "u M");
  assert.throws(() => M.matvec(random([4], 1)), /last axis must be rdim = 5/);
  assert.throws(() => M.matvec(random([4, 5], 1)), /do not broadcast/);
});

Deno.test("scale: a number multiplies M; anything else is an InputError, never NaN", () => {
  const A = random([3, 2], 18), B = random([2, 3], 19);
  const M = new FactoredMatrix(A, B);
  const d = product(dense(A), dense(B));
  assertClose(M.scale(-2.5).AB, { shape: d.shape, value: (i) => -2.5 * d.value(i) }, "scale");
  assert.throws(
    () => M.scale(random([3], 1) as never),
    (e) => e instanceof InputError && /shape \[3\]/.test(e.message),
  );
  assert.throws(() => M.scale(NaN), InputError);
  assert.throws(() => M.scale("2" as never), InputError);
});
