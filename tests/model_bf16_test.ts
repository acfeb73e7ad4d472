/**
 * `weightDtype: "bf16"`: the big matrices stored as bfloat16 in WebAssembly memory.
 *
 * What is tested, and why these tolerances:
 * - `tiny-hf-bf16` with processing off: the checkpoint's weights are bf16 values already, and
 *   with no processing they reach the device unchanged, so rounding them to bf16 is exact: the
 *   bf16 model must give the f32 model's logits bit for bit, and therefore HF's bf16 golden logits
 *   (computed in float64 from the bf16-stored weights) within the golden test's 1e-4.
 * - With processing on, LayerNorm folding and centring make new f32 weights that bf16 storage
 *   rounds (relative error at most 2^-9 each). To first order each rounded product perturbs its
 *   output by at most 2^-9 of its sum of |a b| terms; the tiny model has 9 such products per
 *   logit (2 layers x QKV, O, in, out, then W_U), so we allow 9 * 2^-9 times the largest |logit|
 *   against the f32 model, and require the bf16 error to be a real (non-zero) rounding effect.
 * - `tiny-hf-f32` (weights not bf16-representable) unprocessed: the same bound, and HF's f32
 *   golden logits within that bound plus the golden tolerance.
 */
import assert from "node:assert/strict";
import { InputError } from "../core/errors.ts";
import { readTinyGolden } from "./fixtures.ts";
import { maxAbs, maxAbsDiff } from "./assertions.ts";
import { fixtureModel } from "./toolkit_helpers.ts";

const golden = readTinyGolden();
const ROUNDED_PRODUCTS = 9;

async function logits(dir: string, processed: boolean, dtype: "f32" | "bf16") {
  const model = await fixtureModel(dir, { processed, weightDtype: dtype });
  assert.equal(model.weightDtype, dtype);
  const out = (await model.run(golden.tokens)).data;
  model.dispose();
  return out;
}

Deno.test("tiny-hf-bf16, unprocessed: bf16 storage is exact, logits equal f32 and HF's bf16 golden", async () => {
  const f32 = await logits("tiny-hf-bf16", false, "f32");
  const bf16 = await logits("tiny-hf-bf16", false, "bf16");
  assert.deepEqual(
    new Uint32Array(bf16.buffer),
    new Uint32Array(f32.buffer),
    "bf16-stored bf16 weights must give identical logits",
  );
  const g = (golden.bf16 as { logits: number[][][] }).logits.flat(2);
  const err = maxAbsDiff(bf16, g);
  assert.ok(err < 1e-4, `vs HF bf16 golden logits: ${err}`);
});

for (const dir of ["tiny-hf-bf16", "tiny-hf-f32"]) {
  Deno.test(`${dir}, processed: bf16 logits within ${ROUNDED_PRODUCTS} x 2^-9 x max|logit| of f32`, async () => {
    const f32 = await logits(dir, true, "f32");
    const bf16 = await logits(dir, true, "bf16");
    const err = maxAbsDiff(bf16, f32), tol = ROUNDED_PRODUCTS * 2 ** -9 * maxAbs(f32);
    assert.ok(err > 0, "processed weights are not bf16 values: rounding must show");
    assert.ok(err <= tol, `bf16 vs f32 logits: ${err} > ${tol}`);
  });
}

Deno.test("tiny-hf-f32, unprocessed: bf16 logits near f32 and HF's f32 golden", async () => {
  const f32 = await logits("tiny-hf-f32", false, "f32");
  const bf16 = await logits("tiny-hf-f32", false, "bf16");
  const tol = ROUNDED_PRODUCTS * 2 ** -9 * maxAbs(f32);
  const err = maxAbsDiff(bf16, f32);
  assert.ok(err > 0 && err <= tol, `bf16 vs f32 logits: ${err} (tol ${tol})`);
  const g = (golden.f32 as { logits: number[][][] }).logits.flat(2);
  assert.ok(maxAbsDiff(bf16, g) <= tol + 1e-4, "vs HF f32 golden logits");
});

Deno.test("weightDtype: accessors keep the f32 processed weights; bad values rejected", async () => {
  const a = await fixtureModel("tiny-hf-f32", { processed: true, weightDtype: "f32" });
  const b = await fixtureModel("tiny-hf-f32", { processed: true, weightDtype: "bf16" });
  assert.deepEqual(b.W_in.data, a.W_in.data);
  assert.deepEqual(b.W_U.data, a.W_U.data);
  a.dispose();
  b.dispose();
  await assert.rejects(
    () => fixtureModel("tiny-hf-f32", { weightDtype: "f8" as "bf16" }),
    InputError,
  );
});
