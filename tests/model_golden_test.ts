/**
 * The forward pass against HF transformers' float64 outputs for the four tiny fixture models.
 * Tolerances: float32 compute over 2 layers of width 32 gives errors around 1e-6; the bounds
 * (logits 1e-4, patterns 1e-5, hidden states 1e-4) are the issue's and leave two orders of margin.
 * HF's last hidden state is ln_f's output after its weight and bias, which is what
 * TransformerLens's LayerNorm hooks as `ln_final.hook_normalized`.
 *
 * Every test runs on each backend (`wasm`, and `webgpu` where an adapter exists; see
 * backend_harness.ts) from this one code: the bounds hold for any float32 summation order (the
 * GPU sums in tiles and trees, the CPU in SIMD lanes), since at width 32 over 2 layers a
 * reordered sum moves each value by a few ulp, ~1e-6, two orders under the bounds.
 */
import assert from "node:assert/strict";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { fixturePath, readTinyGolden, TINY_MODELS } from "./fixtures.ts";
import { deviceTest, TEST_DEVICES, type TestDevice } from "./backend_harness.ts";
import { maxAbsDiff } from "./assertions.ts";

const golden = readTinyGolden();

async function loadTiny(
  dir: string,
  processed: boolean,
  d: TestDevice,
): Promise<HookedTransformer> {
  const path = fixturePath(dir);
  const config = JSON.parse(await Deno.readTextFile(`${path}/config.json`));
  const bytes = await Deno.readFile(`${path}/model.safetensors`);
  const flag = processed;
  return await HookedTransformer.fromBytes(config, bytes, {
    name: dir,
    device: d.device,
    threads: 1,
    foldLn: flag,
    centerWritingWeights: flag,
    centerUnembed: flag,
    foldValueBiases: flag,
  });
}

interface Golden {
  logits: number[][][];
  attentions: number[][][][][];
  hidden_states: number[][][][];
}

for (const d of TEST_DEVICES) {
  for (const { dir, golden: key } of TINY_MODELS) {
    const g = golden[key] as Golden;
    Deno.test(
      deviceTest(
        d,
        `${dir}: logits, patterns and hidden states match HF (unprocessed)`,
        async () => {
          const model = await loadTiny(dir, false, d);
          try {
            const { logits, cache } = await model.runWithCache(golden.tokens);
            assert.ok(maxAbsDiff(logits!.data, g.logits.flat(2)) < 1e-4, "logits");
            for (let l = 0; l < model.cfg.nLayers; l++) {
              const err = maxAbsDiff(cache.get("pattern", l).data, g.attentions[l].flat(3));
              assert.ok(err < 1e-5, `pattern layer ${l}: ${err}`);
            }
            const resid = [cache.get("resid_pre", 0)];
            for (let l = 0; l < model.cfg.nLayers - 1; l++) resid.push(cache.get("resid_post", l));
            resid.push(cache.get("ln_final.hook_normalized"));
            resid.forEach((t, i) => {
              const err = maxAbsDiff(t.data, g.hidden_states[i].flat(2));
              assert.ok(err < 1e-4, `hidden state ${i}: ${err}`);
            });
          } finally {
            model.dispose();
          }
        },
      ),
    );

    Deno.test(
      deviceTest(
        d,
        `${dir}: processed logits equal HF logits minus their vocabulary mean`,
        async () => {
          const model = await loadTiny(dir, true, d);
          let logits: Float32Array;
          try {
            logits = (await model.run(golden.tokens)).data;
          } finally {
            model.dispose();
          }
          const V = model.cfg.dVocab;
          const expected = g.logits.flat(2);
          for (let r = 0; r < expected.length; r += V) {
            let mean = 0;
            for (let j = 0; j < V; j++) mean += expected[r + j];
            mean /= V;
            for (let j = 0; j < V; j++) expected[r + j] -= mean;
          }
          const err = maxAbsDiff(logits, expected);
          assert.ok(err < 1e-4, `processed logits: ${err}`);
        },
      ),
    );
  }
}
