/**
 * `checkFinite`: NaN and infinite weights are found in every float dtype, named by the
 * checkpoint's tensor name and position; and `fromPretrained`/`fromBytes` with `checkFinite: true`
 * refuse such a checkpoint, which otherwise loads and makes every logit NaN.
 */
import assert from "node:assert/strict";
import { InputError, WeightsError } from "../core/errors.ts";
import { checkFinite } from "../io/check_finite.ts";
import { parseSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { fixturePath, readTinyGolden } from "./fixtures.ts";

function rejects(bytes: Uint8Array, pattern: RegExp): void {
  assert.throws(() => checkFinite(parseSafetensors(bytes, "m.safetensors")), (e: Error) => {
    assert.ok(e instanceof WeightsError, `${e.name}: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("checkFinite: finite files pass, whatever the dtype, and other dtypes are skipped", () => {
  const finite = { data: Float32Array.from([0, -0, 6e-8, -65504, 1]), shape: [5] };
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    checkFinite(parseSafetensors(writeSafetensors({ a: finite }, { dtype })));
  }
  // An I32 tensor whose bits would read as NaN in F32 (0x7fc00000) is not a float: skipped.
  const header = JSON.stringify({ i: { dtype: "I32", shape: [1], data_offsets: [0, 4] } });
  const bytes = new Uint8Array(8 + header.length + 4);
  new DataView(bytes.buffer).setUint32(0, header.length, true);
  bytes.set(new TextEncoder().encode(header), 8);
  new DataView(bytes.buffer).setUint32(8 + header.length, 0x7fc00000, true);
  checkFinite(parseSafetensors(bytes));
});

Deno.test("checkFinite: names the first tensor in storage order, its first bad value and count", () => {
  const ok = { data: new Float32Array(6).fill(1), shape: [2, 3] };
  const nan = { data: Float32Array.from([1, 2, 3, 4, NaN, 6, NaN, 8]), shape: [2, 2, 2] };
  const inf = { data: Float32Array.from([1, -Infinity, 3]), shape: [3] };
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    const bytes = writeSafetensors([["ok", ok], ["w.nan", nan], ["w.inf", inf]], { dtype });
    rejects(bytes, /^m\.safetensors: tensor "w\.nan" holds NaN at \[1, 0, 0\] \(2 of its 8 values/);
    rejects(
      writeSafetensors([["ok", ok], ["w.inf", inf]], { dtype }),
      /tensor "w\.inf" holds -Infinity at \[1\] \(1 of its 3/,
    );
  }
  // Values past F16's range become infinite when stored: that is what the file holds.
  const big = writeSafetensors({ big: { data: Float32Array.from([70000]), shape: [] } }, {
    dtype: "F16",
  });
  rejects(big, /tensor "big" holds Infinity at \[\] \(1 of its 1 values/);
});

Deno.test("checkFinite: F64 and unaligned tensors are read correctly", () => {
  // Padded so that the data area starts 2 bytes past a multiple of 4: no aligned typed view.
  let header = JSON.stringify({
    a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
    b: { dtype: "F64", shape: [2], data_offsets: [8, 24] },
  });
  while ((8 + header.length) % 4 !== 2) header += " ";
  const build = (a1: number, b1: number) => {
    const h = new TextEncoder().encode(header);
    const bytes = new Uint8Array(8 + h.length + 24);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, h.length, true);
    bytes.set(h, 8);
    view.setFloat32(8 + h.length + 4, a1, true);
    view.setFloat64(8 + h.length + 16, b1, true);
    return bytes;
  };
  checkFinite(parseSafetensors(build(1, 1)));
  rejects(build(Infinity, 1), /tensor "a" holds Infinity at \[1\]/);
  rejects(build(1, NaN), /tensor "b" holds NaN at \[1\]/);
  rejects(build(1, 1e300 * 1e10), /tensor "b" holds Infinity/);
});

Deno.test("fromBytes with checkFinite refuses a poisoned checkpoint; without it, logits are NaN", async () => {
  const dir = fixturePath("tiny-hf-f32");
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  const bytes = await Deno.readFile(`${dir}/model.safetensors`);
  const name = "transformer.h.1.mlp.c_proj.weight";
  const info = parseSafetensors(bytes).info(name);
  assert.deepEqual(info.shape, [128, 32]);
  const poisoned = bytes.slice();
  new DataView(poisoned.buffer).setFloat32(info.byteOffset + 4 * (3 * 32 + 5), NaN, true);

  await assert.rejects(
    HookedTransformer.fromBytes(config, poisoned, { checkFinite: true }),
    (e: Error) => {
      assert.ok(e instanceof WeightsError, String(e));
      assert.match(
        e.message,
        new RegExp(`tensor "${name}" holds NaN at \\[3, 5\\] \\(1 of its 4096`),
      );
      return true;
    },
  );
  // The clean file passes the check and gives HF's logits.
  const model = await HookedTransformer.fromBytes(config, bytes, {
    checkFinite: true,
    foldLn: false,
    centerWritingWeights: false,
    centerUnembed: false,
    foldValueBiases: false,
    threads: 1,
  });
  const golden = readTinyGolden();
  const logits = (await model.run(golden.tokens)).data;
  const expected = (golden.f32 as { logits: number[][][] }).logits.flat(2);
  assert.ok(logits.every((x, i) => Math.abs(x - expected[i]) < 1e-4));
  // Unchecked, as in TransformerLens: one NaN weight in layer 1's MLP reaches every logit.
  const unchecked = await HookedTransformer.fromBytes(config, poisoned, { threads: 1 });
  assert.ok((await unchecked.run(golden.tokens)).data.every(Number.isNaN));

  await assert.rejects(
    HookedTransformer.fromBytes(config, bytes, { checkFinite: "yes" as unknown as boolean }),
    (e: Error) =>
      e instanceof InputError && /checkFinite must be true or false, got yes/.test(e.message),
  );
});
