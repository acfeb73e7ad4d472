/**
 * bfloat16 for every family: bf16 checkpoints, and `weightDtype: "bf16"` storage.
 *
 * - A BF16 checkpoint (the fixture's tensors rounded to bf16, nearest even, as `save_pretrained`
 *   of a bf16 model stores them) against float64 logits of the same rounded weights
 *   (`tests/fixtures/families-bf16/golden.json`, computed by `tests/fixtures/families-bf16/make_golden.py`,
 *   which reproduces the float32 golden to 5e-15): within 1e-4 unprocessed, and processed up to the
 *   vocabulary mean, as the float32 checkpoints. bf16 rounding moves these logits by 3-5e-2, so the
 *   test sees the difference between the bf16 and the f32 weights.
 * - `weightDtype: "bf16"` on that checkpoint, unprocessed: the matrices are bf16 values already, so
 *   storing them as bf16 is exact and the logits equal f32 storage's bit for bit.
 * - `weightDtype: "bf16"` on the float32 checkpoint, processed: each of the 9 rounded products per
 *   logit (2 layers x Q|K|V, O, [gate|]in, out, then W_U) moves its output by at most 2^-9 of its
 *   sum of |a b| terms (first order), so the logits stay within 9 x 2^-9 x max|logit| of f32's, and
 *   the rounding must show (a non-zero difference).
 */
import assert from "node:assert/strict";
import type { Tensor } from "../core/tensor.ts";
import { parseSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { centred, FAMILY_FIXTURES, loadFamily, readFamily } from "./families_fixtures.ts";
import { fixturePath } from "./fixtures.ts";
import { maxAbsDiff } from "./assertions.ts";

const golden = JSON.parse(
  await Deno.readTextFile(fixturePath("families-bf16/golden.json")),
) as { tokens: number[][] } & Record<string, { logits: number[][][] }>;

const ROUNDED_PRODUCTS = 9;

/** The fixture checkpoint with every tensor stored as BF16. */
async function bf16Checkpoint(dir: string): Promise<Uint8Array> {
  const file = parseSafetensors((await readFamily(dir)).bytes);
  return writeSafetensors(file.names().map((n) => [n, file.tensor(n)] as [string, Tensor]), {
    dtype: "BF16",
    metadata: { format: "pt" },
  });
}

async function logits(
  dir: string,
  processed: boolean,
  dtype: "f32" | "bf16",
  bytes?: Uint8Array,
): Promise<Float32Array> {
  const model = await loadFamily(dir, processed, dtype, bytes);
  try {
    assert.equal(model.weightDtype, dtype);
    return (await model.run(golden.tokens)).data;
  } finally {
    model.dispose();
  }
}

for (const { dir } of FAMILY_FIXTURES) {
  Deno.test(`${dir}: a bf16 checkpoint matches float64 logits of its bf16 weights`, async () => {
    const bytes = await bf16Checkpoint(dir);
    const file = parseSafetensors(bytes);
    assert.ok(file.names().every((n) => file.info(n).dtype === "BF16"));
    const expected = golden[dir].logits.flat(2);
    const raw = await logits(dir, false, "f32", bytes);
    const err = maxAbsDiff(raw, expected);
    assert.ok(err < 1e-4, `unprocessed: ${err}`);
    const processed = await logits(dir, true, "f32", bytes);
    const V = golden[dir].logits[0][0].length;
    const perr = maxAbsDiff(processed, centred(expected, V));
    assert.ok(perr < 1e-4, `processed: ${perr}`);
    // bf16 storage of bf16 values is exact.
    const stored = await logits(dir, false, "bf16", bytes);
    assert.deepEqual(new Uint32Array(stored.buffer), new Uint32Array(raw.buffer));
  });

  Deno.test(`${dir}: weightDtype bf16 on processed f32 weights stays within the rounding bound`, async () => {
    const f32 = await logits(dir, true, "f32");
    const bf16 = await logits(dir, true, "bf16");
    let maxLogit = 0;
    for (const v of f32) maxLogit = Math.max(maxLogit, Math.abs(v));
    const err = maxAbsDiff(bf16, f32), tol = ROUNDED_PRODUCTS * 2 ** -9 * maxLogit;
    assert.ok(err > 0, "processed weights are not bf16 values: rounding must show");
    assert.ok(err <= tol, `bf16 vs f32 logits: ${err} > ${tol}`);
  });
}
