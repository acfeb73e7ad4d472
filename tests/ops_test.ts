/**
 * Tensor operations against plain-loop float64 references on seeded random tensors, and the
 * shape rules (broadcasting, negative axes and indices, einsum specs) against torch's behaviour
 * written out by hand.
 */
import assert from "node:assert/strict";
import {
  add,
  arange,
  argmax,
  cat,
  div,
  einsum,
  eq,
  fromNested,
  full,
  gt,
  index,
  InputError,
  item,
  logSoftmax,
  matmul,
  max,
  mean,
  min,
  permute,
  reshape,
  slice,
  softmax,
  sub,
  sum,
  take,
  toNested,
  topk,
  transpose,
  where,
} from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { SeededRng } from "../core/rng.ts";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";

function random(shape: number[], seed: number): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  new SeededRng(seed, "ops-test").fillNormal(data);
  return { data, shape };
}

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    if (!(Math.abs(actual[i] - expected[i]) <= tol * Math.max(1, Math.abs(expected[i])))) {
      assert.fail(`${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
    }
  }
}

/** Value of t at a multi-index (row-major). */
function at(t: Tensor, idx: number[]): number {
  let o = 0;
  idx.forEach((i, d) => o = o * t.shape[d] + i);
  return t.data[o];
}

Deno.test("index, slice, take: torch's semantics with negative indices", () => {
  const t = reshape(arange(24), [2, 3, 4]);
  assert.deepEqual(toNested(index(t, -1, -1)), [20, 21, 22, 23]);
  assert.deepEqual(index(t, null, -1).shape, [2, 4]);
  assert.deepEqual(toNested(index(t, "...", -1)), [[3, 7, 11], [15, 19, 23]]);
  assert.deepEqual(toNested(index(t, 0, { start: -2 }, { step: 3 })), [[4, 7], [8, 11]]);
  assert.deepEqual(toNested(index(t, 1, [2, 0], 1)), [21, 13]);
  assert.deepEqual(toNested(slice(arange(6), 0, 4, 0, -2)), [4, 2]);
  assert.deepEqual(toNested(slice(arange(6), -1, -2)), [4, 5]);
  assert.deepEqual(toNested(take(reshape(arange(6), [2, 3]), [-1, 0], 1)), [[2, 0], [5, 3]]);
  assert.deepEqual(index(t, 0, { start: 5 }).shape, [0, 4]);
  assert.throws(() => index(t, 2), InputError);
  assert.throws(() => index(t, 0, 0, 0, 0), InputError);
  assert.throws(() => index(t, 0, { step: 0 }), InputError);
});

Deno.test("reshape, permute, transpose, cat", () => {
  const t = random([2, 3, 4], 1);
  assert.deepEqual(reshape(t, [-1, 4]).shape, [6, 4]);
  assert.throws(() => reshape(t, [5, -1]), InputError);
  const p = permute(t, [2, 0, -2]);
  assert.deepEqual(p.shape, [4, 2, 3]);
  for (const [i, j, k] of [[0, 0, 0], [3, 1, 2], [2, 0, 1]]) {
    assert.equal(at(p, [i, j, k]), at(t, [j, k, i]));
  }
  assert.equal(at(transpose(t, 0, 2), [3, 2, 1]), at(t, [1, 2, 3]));
  assert.throws(() => permute(t, [0, 0, 1]), InputError);
  const c = cat([t, random([2, 1, 4], 2)], 1);
  assert.deepEqual(c.shape, [2, 4, 4]);
  assert.equal(at(c, [1, 2, 3]), at(t, [1, 2, 3]));
});

Deno.test("elementwise ops broadcast as numpy, comparisons give 0/1, where selects", () => {
  const a = fromNested([[1], [2], [3]]);
  const b = fromNested([10, 20]);
  assert.deepEqual(toNested(add(a, b)), [[11, 21], [12, 22], [13, 23]]);
  assert.deepEqual(toNested(sub(b, 1)), [9, 19]);
  assert.deepEqual(toNested(div(2, fromNested([4, 8]))), [0.5, 0.25]);
  assert.deepEqual(toNested(gt(a, 2)), [[0], [0], [1]]);
  assert.deepEqual(toNested(eq(fromNested([1, 2]), fromNested([[1], [2]]))), [[1, 0], [0, 1]]);
  assert.deepEqual(toNested(where(gt(b, 15), b, a)), [[1, 20], [2, 20], [3, 20]]);
  assert.throws(() => add(fromNested([1, 2]), fromNested([1, 2, 3])), InputError);
});

Deno.test("reductions along any axes, with keepDim; argmax takes the first maximum", () => {
  const t = random([3, 4, 5], 3);
  const s = sum(t, [0, -1]);
  assert.deepEqual(s.shape, [4]);
  for (let j = 0; j < 4; j++) {
    let ref = 0;
    for (let i = 0; i < 3; i++) for (let k = 0; k < 5; k++) ref += at(t, [i, j, k]);
    close([s.data[j]], [ref], 1e-6, "sum");
  }
  assert.deepEqual(mean(t, 1, { keepDim: true }).shape, [3, 1, 5]);
  close(mean(t).data, [sum(t).data[0] / 60], 1e-6, "mean");
  const m = max(t, 1);
  const am = argmax(t, 1);
  for (let i = 0; i < 3; i++) {
    for (let k = 0; k < 5; k++) {
      let best = 0;
      for (let j = 1; j < 4; j++) if (at(t, [i, j, k]) > at(t, [i, best, k])) best = j;
      assert.equal(at(am, [i, k]), best);
      assert.equal(at(m, [i, k]), at(t, [i, best, k]));
    }
  }
  assert.equal(toNested(argmax(fromNested([1, 3, 3]))), 1);
  assert.deepEqual(toNested(min(fromNested([[4, -1], [2, 7]]), 0)), [2, -1]);
  assert.equal(item(sum(fromNested([1, 2, 3]))), 6);
  assert.throws(() => item(fromNested([1, 2])), InputError);
});

Deno.test("softmax, logSoftmax, topk along an axis", () => {
  const t = random([2, 7], 4);
  const p = softmax(t, 0);
  const lp = logSoftmax(t);
  for (let j = 0; j < 7; j++) {
    const e0 = Math.exp(at(t, [0, j])), e1 = Math.exp(at(t, [1, j]));
    close([at(p, [0, j])], [e0 / (e0 + e1)], 1e-6, "softmax");
  }
  for (let i = 0; i < 2; i++) {
    let z = 0;
    for (let j = 0; j < 7; j++) z += Math.exp(at(t, [i, j]));
    for (let j = 0; j < 7; j++) close([at(lp, [i, j])], [at(t, [i, j]) - Math.log(z)], 1e-6, "lsm");
  }
  const { values, indices } = topk(t, 3);
  assert.deepEqual(values.shape, [2, 3]);
  for (let i = 0; i < 2; i++) {
    const row = Array.from({ length: 7 }, (_, j) => at(t, [i, j]));
    const order = row.map((v, j) => [v, j]).sort((x, y) => y[0] - x[0]).slice(0, 3);
    assert.deepEqual(Array.from(index(indices, i).data), order.map((o) => o[1]));
    assert.deepEqual(Array.from(index(values, i).data), order.map((o) => Math.fround(o[0])));
  }
  assert.deepEqual(topk(t, 1, { axis: 0, largest: false }).indices.shape, [1, 7]);
  assert.throws(() => topk(t, 8), InputError);
});

const wasm = await WasmBackend.load({ threads: 1 });

Deno.test("matmul: vectors, broadcast batches, and the backend path equal a float64 loop", () => {
  const a = random([2, 3, 70, 40], 5), b = random([3, 40, 90], 6);
  const refAt = (i: number, j: number, r: number, c: number) => {
    let s = 0;
    for (let k = 0; k < 40; k++) s += at(a, [i, j, r, k]) * at(b, [j, k, c]);
    return s;
  };
  for (const backend of [undefined, wasm]) {
    const c = matmul(a, b, backend);
    assert.deepEqual(c.shape, [2, 3, 70, 90]);
    for (const [i, j, r, col] of [[0, 0, 0, 0], [1, 2, 69, 89], [1, 0, 33, 12]]) {
      close([at(c, [i, j, r, col])], [refAt(i, j, r, col)], 1e-5, "matmul");
    }
  }
  // A shared right matrix takes the backend's one-product path.
  const big = random([300, 64], 7), w = random([64, 128], 8);
  const viaWasm = matmul(big, w, wasm), viaJs = matmul(big, w);
  close(viaWasm.data, viaJs.data, 1e-5, "wasm vs js");
  assert.deepEqual(matmul(fromNested([1, 2]), fromNested([[1, 0], [0, 1]])).shape, [2]);
  assert.throws(() => matmul(random([2, 3], 1), random([4, 2], 1)), InputError);
});

Deno.test("einsum: contractions, batch indices, reductions and permutations", () => {
  const x = random([2, 5, 8], 9), w = random([8, 6], 10), y = random([2, 5, 8], 11);
  const out = einsum("bpd,dv->bpv", x, w);
  close(out.data, matmul(x, w).data, 1e-6, "bpd,dv->bpv");
  const dots = einsum("bpd,bpd->bp", x, y);
  const ref = sum({ data: x.data.map((v, i) => v * y.data[i]), shape: x.shape }, -1);
  close(dots.data, ref.data, 1e-6, "bpd,bpd->bp");
  const perm = einsum("bpd->dbp", x);
  close(perm.data, permute(x, [2, 0, 1]).data, 0, "bpd->dbp");
  const outer = einsum("i,j->ij", fromNested([1, 2]), fromNested([3, 4, 5]));
  assert.deepEqual(toNested(outer), [[3, 4, 5], [6, 8, 10]]);
  const three = einsum("ij,jk,kl->il", random([3, 4], 1), random([4, 5], 2), random([5, 2], 3));
  const three2 = matmul(matmul(random([3, 4], 1), random([4, 5], 2)), random([5, 2], 3));
  close(three.data, three2.data, 1e-5, "chain");
  close(einsum("ij->", fromNested([[1, 2], [3, 4]])).data, [10], 0, "total");
  close(einsum("bpd,dv->bpv", x, w, { backend: wasm }).data, out.data, 1e-5, "backend");
  assert.throws(() => einsum("ii->i", random([2, 2], 1)), InputError);
  assert.throws(() => einsum("ij,jk->ik", random([2, 3], 1), random([4, 2], 1)), InputError);
  assert.throws(() => einsum("ij", random([2, 3], 1)), InputError);
  assert.deepEqual(full([2], 3).data, Float32Array.of(3, 3));
});
