/**
 * `weightDtype: "f16"`: the big matrices stored as IEEE half precision (packed two per u32 on
 * WebGPU, kept as their exact f32 values on WebAssembly), on each backend.
 *
 * What is tested, and why these tolerances:
 * - `tiny-hf-f16` (a float16 checkpoint) with processing off: its weights are f16 values already
 *   and reach the device unchanged, so f16 storage is exact: the stored matrices read back equal
 *   the checkpoint's values bit for bit, the logits equal the f32-stored model's on the same
 *   device bit for bit, and HF's float16 golden logits (float64 from the f16-stored weights)
 *   within the golden test's 1e-4.
 * - Processed weights (LayerNorm folding and centring make new f32 values) are rounded to f16:
 *   relative error at most u_h = 2^-11 each (f16 has 11 significant bits; subnormal weights, under
 *   2^-14, err by at most 2^-25 absolute, negligible here). To first order each rounded product
 *   moves its output by at most u_h of its sum of |a w| terms; the tiny model has 9 such products
 *   per logit (2 layers x QKV, O, in, out, then W_U), so f16 logits stay within 9 x 2^-11 x
 *   max|logit| of the f32 model's (the bf16 test's argument with bf16's 2^-9), and must differ
 *   from them (a real rounding effect). Against HF's f32 golden: that bound plus the golden 1e-4.
 * - wasm against webgpu, both f16: the two hold the same f16 weights (the same rounding, widened
 *   exactly), so only float32 summation order separates them; over 2 layers of width 32 that is
 *   a few ulp of the partial sums, about 1e-6 of max|logit|: we allow 1e-5 of max|logit| (the
 *   issue's bound for WebGPU against WebAssembly).
 */
import assert from "node:assert/strict";
import { runtimeOf } from "../model/hooked_transformer.ts";
import { f16BitsToF32, f32ToF16Bits } from "../core/dtype.ts";
import { readTinyGolden } from "./fixtures.ts";
import { deviceTest, TEST_DEVICES, type TestDevice } from "./backend_harness.ts";
import { maxAbs, maxAbsDiff } from "./assertions.ts";
import { fixtureModel } from "./toolkit_helpers.ts";

const golden = readTinyGolden();
const ROUNDED_PRODUCTS = 9;
const F16_U = 2 ** -11;

async function logits(dir: string, processed: boolean, dtype: "f32" | "f16", d: TestDevice) {
  const model = await fixtureModel(dir, {
    processed: processed,
    weightDtype: dtype,
    device: d.device,
  });
  try {
    assert.equal(model.weightDtype, dtype);
    return (await model.run(golden.tokens)).data;
  } finally {
    model.dispose();
  }
}

/** Logits of the f16 models per device, for the cross-device comparison. */
const f16Logits = new Map<string, Float32Array>();

for (const d of TEST_DEVICES) {
  Deno.test(
    deviceTest(
      d,
      "tiny-hf-f16, unprocessed: f16 storage keeps the checkpoint exactly",
      async () => {
        const model = await fixtureModel("tiny-hf-f16", {
          processed: false,
          weightDtype: "f16",
          device: d.device,
        });
        try {
          const { backend, weights, params } = runtimeOf(model);
          // the checkpoint's values (widened exactly on load) are f16 values...
          const W_U = params.W_U.data;
          assert.deepEqual(W_U, W_U.map((v) => f16BitsToF32(f32ToF16Bits(v))));
          // ...and the device holds them unchanged
          assert.deepEqual(await backend.readMatrix(weights.W_U), W_U, "W_U");
          const W_in = params.W_in.data.subarray(0, model.cfg.dModel * model.cfg.dMlp);
          assert.deepEqual(await backend.readMatrix(weights.blocks[0].W_in), W_in, "W_in[0]");
        } finally {
          model.dispose();
        }
        const f32 = await logits("tiny-hf-f16", false, "f32", d);
        const f16 = await logits("tiny-hf-f16", false, "f16", d);
        assert.deepEqual(
          new Uint32Array(f16.buffer),
          new Uint32Array(f32.buffer),
          "f16-stored f16 weights must give the f32-stored model's logits bit for bit",
        );
        const g = (golden.f16 as { logits: number[][][] }).logits.flat(2);
        const err = maxAbsDiff(f16, g);
        assert.ok(err < 1e-4, `vs HF f16 golden logits: ${err}`);
      },
    ),
  );

  Deno.test(
    deviceTest(
      d,
      "tiny-hf-f32: f16 logits within 9 x 2^-11 x max|logit| of f32, and of HF",
      async () => {
        for (const processed of [true, false]) {
          const f32 = await logits("tiny-hf-f32", processed, "f32", d);
          const f16 = await logits("tiny-hf-f32", processed, "f16", d);
          const err = maxAbsDiff(f16, f32), tol = ROUNDED_PRODUCTS * F16_U * maxAbs(f32);
          console.log(
            `processed ${processed}: f16 vs f32 logits ${err.toExponential(2)} (bound ` +
              `${tol.toExponential(2)})`,
          );
          assert.ok(err > 0, "the fixture's f32 weights are not f16 values: rounding must show");
          assert.ok(err <= tol, `f16 vs f32 logits: ${err} > ${tol}`);
          if (!processed) {
            const g = (golden.f32 as { logits: number[][][] }).logits.flat(2);
            assert.ok(maxAbsDiff(f16, g) <= tol + 1e-4, "vs HF f32 golden logits");
            f16Logits.set(d.device, f16);
          }
        }
      },
    ),
  );
}

const webgpu = TEST_DEVICES.find((d) => d.device === "webgpu")!;
Deno.test(
  deviceTest(webgpu, "tiny-hf-f32 with f16 weights: wasm and webgpu logits within 1e-5", () => {
    const a = f16Logits.get("wasm"), b = f16Logits.get("webgpu");
    assert.ok(a && b, "runs after both devices' f16 tests (same file, in order)");
    const err = maxAbsDiff(a, b), tol = 1e-5 * maxAbs(a);
    console.log(
      `f16 logits, wasm vs webgpu: ${err.toExponential(2)} (bound ${tol.toExponential(2)})`,
    );
    assert.ok(err <= tol, `wasm vs webgpu: ${err} > ${tol}`);
  }),
);
