/**
 * What the loader's memory savings (issue 17) must not change: a transpose written into a given
 * array equals the fresh one, and a checkpoint the caller holds (fromTensors) stays intact after a
 * load, since only fromPretrained, which owns the bytes it read, frees them early.
 */
import assert from "node:assert/strict";
import { transpose2d } from "../core/tensor.ts";
import { HookedTransformer, resolveModel } from "../mod.ts";

Deno.test("transpose2d into a given array equals the fresh transpose", () => {
  const rows = 70, cols = 131; // more than one 64-wide block each way, ragged edges
  const a = new Float32Array(rows * cols).map((_, i) => Math.sin(i));
  const fresh = transpose2d(a, rows, cols);
  const big = new Float32Array(rows * cols + 8).fill(7);
  const out = big.subarray(4, 4 + rows * cols);
  assert.equal(transpose2d(a, rows, cols, out), out);
  assert.deepEqual(out, fresh);
  assert.deepEqual([...big.subarray(0, 4), ...big.subarray(4 + rows * cols)], Array(8).fill(7));
  assert.deepEqual(fresh[1 * rows + 0], a[0 * cols + 1]);
  assert.throws(() => transpose2d(a, rows, cols, new Float32Array(5)), /out holds 5/);
});

Deno.test("fromTensors leaves the caller's checkpoint bytes and source usable", async () => {
  const files = await resolveModel("induction-toy");
  const lengths = files.weightBytes.map((b) => b.byteLength);
  const name = files.tensors.names()[0];
  const before = files.tensors.tensor(name).data;
  const model = await HookedTransformer.fromTensors(files.config, files.tensors, { threads: 1 });
  try {
    assert.deepEqual(files.weightBytes.map((b) => b.byteLength), lengths);
    assert.deepEqual(files.tensors.tensor(name).data, before);
    const again = await HookedTransformer.fromTensors(files.config, files.tensors, { threads: 1 });
    const x = [[1, 2, 3, 1, 2]];
    assert.deepEqual((await again.run(x)).data, (await model.run(x)).data);
    again.dispose();
  } finally {
    model.dispose();
  }
});
