/**
 * Issue 20, item 6: the tensor operations ARENA code needs, each against its definition written
 * out as a plain float64 loop over multi-indices (torch's documented semantics), on seeded random
 * tensors, never against another function of this library. Float32 results of sums (cumsum, norm,
 * einsum) are compared with a relative tolerance of 1e-5: float64 accumulation, one float32
 * rounding of the result, and at most a few hundred terms of unit-normal values.
 */
import assert from "node:assert/strict";
import {
  allclose,
  arange,
  clone,
  cumsum,
  diagonal,
  einsum,
  expand,
  flatten,
  gather,
  InputError,
  norm,
  repeat,
  reshape,
  set,
  squeeze,
  tril,
  triu,
  unsqueeze,
} from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { SeededRng } from "../core/rng.ts";
import { tinyModel } from "./toolkit_helpers.ts";

function random(shape: number[], seed: number): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  new SeededRng(seed, "tensor-ops-test").fillNormal(data);
  return { data, shape };
}

/** Every multi-index of a shape, row-major. */
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

/** Value at a multi-index (row-major). */
function at(t: Tensor, idx: readonly number[]): number {
  let o = 0;
  idx.forEach((i, d) => o = o * t.shape[d] + i);
  return t.data[o];
}

function close(actual: Tensor, shape: number[], expected: (idx: number[]) => number, what: string) {
  assert.deepEqual(actual.shape, shape, `${what}: shape`);
  for (const idx of indices(shape)) {
    const want = expected(idx), got = at(actual, idx);
    if (!(Math.abs(got - want) <= 1e-5 * Math.max(1, Math.abs(want)))) {
      assert.fail(`${what}[${idx}]: ${got} vs ${want}`);
    }
  }
}

Deno.test("set: z[:, :, h] = 0 and z[i, :, 1:] = value as torch's index assignment", () => {
  const z = random([2, 3, 4, 5], 1), before = clone(z);
  const h = 2;
  const out = set(z, [null, null, h], 0);
  assert.equal(out, z, "in place: the tensor itself comes back");
  close(z, [2, 3, 4, 5], (i) => i[2] === h ? 0 : at(before, i), "z[:, :, 2] = 0");

  // A value broadcast over the indexed region [3, 3] (from shape [3]).
  const v = random([3], 2), w = clone(before);
  set(w, [-1, null, { start: 1 }, 0], v);
  close(w, [2, 3, 4, 5], (i) => {
    if (i[0] === 1 && i[2] >= 1 && i[3] === 0) return v.data[i[2] - 1];
    return at(before, i);
  }, "w[-1, :, 1:, 0] = v");
  // A list of indices, with "...".
  const u = clone(before);
  set(u, ["...", [0, 3]], -7);
  close(u, [2, 3, 4, 5], (i) => i[3] === 0 || i[3] === 3 ? -7 : at(before, i), "u[..., [0, 3]]");

  assert.throws(() => set(clone(before), [null, 5], 0), InputError);
  assert.throws(() => set(clone(before), [0], random([2], 3)), /does not broadcast/);
  assert.throws(() => set(clone(before), 0 as unknown as [], 0), /list of specs/);
});

Deno.test("gather along each axis: out[i][j] = t[index[i][j]][j] (axis 0), t[i][index[i][j]] (axis 1)", () => {
  const t = random([3, 4, 5], 4);
  const rng = new SeededRng(5, "gather");
  for (const axis of [0, 1, 2, -1]) {
    const a = (axis + 3) % 3;
    const ish = [3, 4, 5].map((d, i) => i === a ? 7 : Math.max(1, d - 1));
    const idx = Array.from({ length: ish.reduce((x, y) => x * y, 1) }, () => rng.int(t.shape[a]));
    const index = { data: idx, shape: ish };
    close(gather(t, axis, index), ish, (i) => {
      const src = [...i];
      src[a] = at({ data: Float32Array.from(idx), shape: ish }, i);
      return at(t, src);
    }, `gather axis ${axis}`);
  }
  assert.throws(() => gather(t, 0, { data: [3], shape: [1, 1, 1] }), /outside/);
  assert.throws(() => gather(t, 0, { data: [0, 0], shape: [1, 2] }), /does not fit/);
});

Deno.test("triu / tril with offsets, on a batch of matrices: kept where j - i >= k / <= k", () => {
  const t = random([2, 4, 6], 6);
  for (const k of [-2, -1, 0, 1, 3]) {
    close(triu(t, k), [2, 4, 6], (i) => i[2] - i[1] >= k ? at(t, i) : 0, `triu ${k}`);
    close(tril(t, k), [2, 4, 6], (i) => i[2] - i[1] <= k ? at(t, i) : 0, `tril ${k}`);
  }
  assert.throws(() => triu(random([3], 1)), InputError);
});

Deno.test("diagonal: torch's (offset, dim1, dim2), the diagonal appended last", () => {
  const t = random([3, 4, 5], 7);
  for (const [offset, d1, d2] of [[0, 0, 1], [1, 0, 1], [-2, 0, 1], [1, 1, 2], [-1, 2, 0]]) {
    const rest = [0, 1, 2].filter((d) => d !== d1 && d !== d2);
    // torch: length = max(0, min(n1 + min(offset, 0), n2 - max(offset, 0)))
    const len = Math.max(
      0,
      Math.min(t.shape[d1] + Math.min(offset, 0), t.shape[d2] - Math.max(offset, 0)),
    );
    close(diagonal(t, offset, d1, d2), [t.shape[rest[0]], len], ([r, k]) => {
      const src = [0, 0, 0];
      src[rest[0]] = r;
      src[d1] = k + Math.max(-offset, 0);
      src[d2] = k + Math.max(offset, 0);
      return at(t, src);
    }, `diagonal(${offset}, ${d1}, ${d2})`);
  }
});

Deno.test("unsqueeze, squeeze, flatten: torch's shapes, the data in the same order", () => {
  const t = random([2, 1, 3], 8);
  assert.deepEqual(unsqueeze(t, 0).shape, [1, 2, 1, 3]);
  assert.deepEqual(unsqueeze(t, -1).shape, [2, 1, 3, 1]);
  assert.deepEqual(unsqueeze(t, 3).shape, [2, 1, 3, 1]);
  assert.deepEqual(squeeze(t).shape, [2, 3]);
  assert.deepEqual(squeeze(t, 0).shape, [2, 1, 3]);
  assert.deepEqual(squeeze(t, [1, -1]).shape, [2, 3]);
  assert.deepEqual(flatten(random([2, 3, 4, 5], 1), 1, 2).shape, [2, 12, 5]);
  assert.deepEqual(flatten(random([2, 3, 4, 5], 1), -2).shape, [2, 3, 20]);
  assert.deepEqual([...flatten(t).data], [...t.data]);
  assert.throws(() => unsqueeze(t, 4), InputError);
  assert.throws(() => flatten(t, 2, 0), InputError);
});

Deno.test("expand and repeat: out[i] = t[i mod n] for repeat, t[0] along stretched axes", () => {
  const t = random([3, 1], 9);
  close(expand(t, [2, 3, 4]), [2, 3, 4], ([, i]) => at(t, [i, 0]), "expand");
  close(expand(t, [-1, 2]), [3, 2], ([i]) => at(t, [i, 0]), "expand -1");
  const u = random([2, 3], 10);
  close(repeat(u, 2, 3, 2), [2, 6, 6], ([, i, j]) => at(u, [i % 2, j % 3]), "repeat");
  assert.throws(() => expand(u, [2, 4]), /cannot expand/);
  assert.throws(() => repeat(u, 2), /one non-negative integer count per axis/);
});

Deno.test("clone owns its data", () => {
  const t = random([2, 2], 11), c = clone(t);
  c.data[0] = 123;
  assert.notEqual(t.data[0], 123);
  assert.deepEqual(c.shape, t.shape);
});

Deno.test("cumsum along each axis: out[..., i, ...] = sum of t[..., :i+1, ...] in float64", () => {
  const t = random([3, 5, 4], 12);
  for (const axis of [0, 1, 2, -1]) {
    const a = (axis + 3) % 3;
    close(cumsum(t, axis), [3, 5, 4], (i) => {
      let s = 0;
      for (let k = 0; k <= i[a]; k++) {
        const j = [...i];
        j[a] = k;
        s += at(t, j);
      }
      return s;
    }, `cumsum ${axis}`);
  }
});

Deno.test("norm: sqrt of the sum of squares (ord 2), sum of |x| (1), max |x| (Infinity)", () => {
  const t = random([3, 4, 5], 13);
  close(norm(t, -1), [3, 4], ([i, j]) => {
    let s = 0;
    for (let k = 0; k < 5; k++) s += at(t, [i, j, k]) ** 2;
    return Math.sqrt(s);
  }, "norm -1");
  close(norm(t, [0, 2], { ord: 1, keepDim: true }), [1, 4, 1], ([, j]) => {
    let s = 0;
    for (let i = 0; i < 3; i++) for (let k = 0; k < 5; k++) s += Math.abs(at(t, [i, j, k]));
    return s;
  }, "norm ord 1");
  close(norm(t, 0, { ord: Infinity }), [4, 5], ([j, k]) => {
    let m = 0;
    for (let i = 0; i < 3; i++) m = Math.max(m, Math.abs(at(t, [i, j, k])));
    return m;
  }, "norm inf");
  close(norm(t), [], () => Math.sqrt(t.data.reduce((s, x) => s + x * x, 0)), "norm all");
  assert.throws(() => norm(t, -1, { ord: 3 }), /ord must be 1, 2 or Infinity/);
});

Deno.test("allclose: |a - b| <= atol + rtol |b| everywhere, broadcasting, NaN as torch", () => {
  const b = { data: Float32Array.of(1, 100, -5), shape: [3] };
  const a = { data: Float32Array.of(1 + 5e-6, 100 + 9e-4, -5), shape: [3] };
  assert.equal(allclose(a, b), true); // 5e-6 <= 1e-8 + 1e-5, 9e-4 <= 1e-8 + 1e-3
  a.data[1] = 100 + 2e-3; // 2e-3 > 1e-3 (float32 spacing at 100 is 7.6e-6)
  assert.equal(allclose(a, b), false);
  assert.equal(allclose(a, b, { atol: 3e-3 }), true);
  assert.equal(allclose({ data: Float32Array.of(1, 1), shape: [2, 1] }, 1), true);
  const n = { data: Float32Array.of(NaN), shape: [1] };
  assert.equal(allclose(n, n), false);
  assert.equal(allclose(n, n, { equalNan: true }), true);
  assert.equal(allclose({ data: Float32Array.of(Infinity), shape: [1] }, Infinity), true);
  assert.throws(() => allclose(random([2], 1), random([3], 1)), InputError);
});

Deno.test("einsum with einops-style names and '...': sums of products over the named axes", () => {
  const x = random([2, 3, 4], 14), W = random([4, 6], 15);
  const want = ([b, p, v]: number[]) => {
    let s = 0;
    for (let d = 0; d < 4; d++) s += at(x, [b, p, d]) * at(W, [d, v]);
    return s;
  };
  close(
    einsum("batch pos d_model, d_model d_vocab -> batch pos d_vocab", x, W),
    [2, 3, 6],
    want,
    "named",
  );
  close(einsum("... d_model, d_model d_vocab -> ... d_vocab", x, W), [2, 3, 6], want, "named ...");
  close(einsum("...d,dv->...v", x, W), [2, 3, 6], want, "letters ...");
  // Ellipses of different lengths align from the right.
  const y = random([3, 4], 16);
  close(einsum("... d, ... d -> ...", x, y), [2, 3], ([b, p]) => {
    let s = 0;
    for (let d = 0; d < 4; d++) s += at(x, [b, p, d]) * at(y, [p, d]);
    return s;
  }, "ellipsis broadcast");
  // An output without "..." sums those axes; a transposed output.
  close(einsum("... d_model -> d_model", x), [4], ([d]) => {
    let s = 0;
    for (let b = 0; b < 2; b++) for (let p = 0; p < 3; p++) s += at(x, [b, p, d]);
    return s;
  }, "sum ...");
  close(einsum("head_index d_head, d_head -> head_index", y, random([4], 17)), [3], ([h]) => {
    const z = random([4], 17);
    let s = 0;
    for (let d = 0; d < 4; d++) s += at(y, [h, d]) * z.data[d];
    return s;
  }, "names with digits and _");

  assert.throws(() => einsum("batch pos, pos pos -> batch", y, y), /repeats the index pos/);
  assert.throws(
    () => einsum("a b, b c -> a q", y, random([4, 2], 1)),
    /names q, which no operand has/,
  );
  assert.throws(
    () => einsum("batch d_model, d_model -> batch", y, random([5], 1)),
    /d_model has size 4/,
  );
  assert.throws(() => einsum("a b c, c -> a", y, y), /names 3 axes/);
  assert.throws(() => einsum("a b", y), /one "->"/);
  assert.throws(() => einsum("a ... b ..., b -> a", x, y), /more than one/);
  assert.throws(() => einsum("a-b c -> a", y), /is not an axis name/);
});

Deno.test("ARENA's head ablation as one set: z[:, :, h] = 0 on a hook_z-shaped tensor", () => {
  // [batch, pos, head_index, d_head]: zero head 1 for every batch and position.
  const z = reshape(arange(2 * 3 * 4 * 2), [2, 3, 4, 2]);
  set(z, [null, null, 1], 0);
  for (const [b, p, h, d] of indices([2, 3, 4, 2])) {
    assert.equal(at(z, [b, p, h, d]), h === 1 ? 0 : ((b * 3 + p) * 4 + h) * 2 + d);
  }
});

Deno.test("set in a hook: z[:, :, h] = 0 removes exactly head h's z W_O from attn_out (float64 reference)", async () => {
  const model = await tinyModel();
  const tokens = [[95, 5, 9, 13, 5, 9], [95, 7, 7, 2, 40, 41]];
  const l = 1, h = 2;
  const { cache: clean } = await model.runWithCache(tokens);
  const { cache: ablated } = await model.runWithCache(tokens, {
    fwdHooks: [[`blocks.${l}.attn.hook_z`, (z) => void set(z, [null, null, h], 0)]],
  });
  const z = clean.get("z", l), out = clean.get("attn_out", l), got = ablated.get("attn_out", l);
  const W_O = model.W_O; // [n_layers, n_heads, d_head, d_model]
  const [, H, dh, d] = W_O.shape;
  const [B, T] = [2, 6];
  let maxErr = 0, maxRef = 0;
  for (let b = 0; b < B; b++) {
    for (let p = 0; p < T; p++) {
      for (let j = 0; j < d; j++) {
        let contrib = 0;
        for (let k = 0; k < dh; k++) {
          contrib += at(z, [b, p, h, k]) * W_O.data[((l * H + h) * dh + k) * d + j];
        }
        const want = at(out, [b, p, j]) - contrib;
        maxErr = Math.max(maxErr, Math.abs(at(got, [b, p, j]) - want));
        maxRef = Math.max(maxRef, Math.abs(want));
      }
    }
  }
  // float32 products of d_head terms against a float64 sum: 1e-5 of the largest entry.
  assert.ok(maxErr <= 1e-5 * Math.max(1, maxRef), `max error ${maxErr} (scale ${maxRef})`);
  // And the head's z really was zeroed in the ablated cache, the others untouched.
  const za = ablated.get("z", l);
  for (const idx of indices(za.shape)) {
    assert.equal(at(za, idx), idx[2] === h ? 0 : at(z, idx));
  }
});
