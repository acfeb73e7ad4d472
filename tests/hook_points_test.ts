/**
 * Every hook point, cached alone, gives exactly the values of a run that caches everything, on 1
 * and 2 threads (whose results are the same bits), and the values are what they claim to be:
 * the pattern is the softmax of the scores, the normalized stream times its scale is the centred
 * residual, the residual adds up. The model is large enough that the kernels really split work
 * between threads (matmuls above 2^20 multiply-adds, attention above 2^17).
 */
import assert from "node:assert/strict";
import { HookedTransformer, syntheticGpt2, type Tensor } from "../mod.ts";
import { bitsEqual } from "./assertions.ts";

const { config, weights } = syntheticGpt2({
  nLayers: 2,
  nHeads: 4,
  dModel: 128,
  dVocab: 300,
  nCtx: 64,
  seed: 11,
});
const TOKENS = Array.from(
  { length: 3 },
  (_, b) => Array.from({ length: 40 }, (_, t) => (b * 37 + t * 11) % 300),
);

async function load(threads: number): Promise<HookedTransformer> {
  return await HookedTransformer.fromBytes(config, weights, { threads });
}

function tensorBitsEqual(a: Tensor, b: Tensor, what: string) {
  assert.deepEqual(a.shape, b.shape, `${what}: shape`);
  bitsEqual(a.data, b.data, what);
}

Deno.test("every hook point cached alone equals the full cache, on 1 and 2 threads", async () => {
  const one = await load(1);
  const two = await load(2);
  assert.equal(two.backend.threads, Math.min(2, navigator.hardwareConcurrency));
  const { cache: full } = await one.runWithCache(TOKENS);
  assert.equal(full.size, one.hookNames.length, "the full cache holds every hook point");
  for (const [model, label] of [[one, "1 thread"], [two, "2 threads"]] as const) {
    for (const name of model.hookNames) {
      const { cache } = await model.runWithCache(TOKENS, { namesFilter: name, returnType: "none" });
      assert.deepEqual(cache.keys(), [name]);
      tensorBitsEqual(cache.get(name), full.get(name), `${name} alone, ${label}`);
    }
  }
  one.dispose();
  two.dispose();
});

Deno.test("cached values are what their names say", async () => {
  const model = await load(2);
  const { cache } = await model.runWithCache(TOKENS);
  const { nLayers, nHeads, dModel: d } = model.cfg;
  const [B, T] = [TOKENS.length, TOKENS[0].length];
  for (let l = 0; l < nLayers; l++) {
    // pattern = softmax(scores) over the causal keys; scores are -inf above the diagonal.
    const s = cache.get("attn_scores", l).data, p = cache.get("pattern", l).data;
    for (let row = 0; row < B * nHeads * T; row++) {
      const q = row % T;
      let max = -Infinity;
      for (let k = 0; k <= q; k++) max = Math.max(max, s[row * T + k]);
      let sum = 0;
      for (let k = 0; k <= q; k++) sum += Math.exp(s[row * T + k] - max);
      for (let k = 0; k < T; k++) {
        const want = k <= q ? Math.exp(s[row * T + k] - max) / sum : 0;
        if (k > q) assert.equal(s[row * T + k], -Infinity);
        assert.ok(Math.abs(p[row * T + k] - want) < 2e-7, `layer ${l} row ${row} key ${k}`);
      }
    }
    // ln1: normalized * scale = resid_pre - mean (LayerNormPre after folding).
    const resid = cache.get("resid_pre", l).data;
    const scale = cache.get("scale", l, "ln1").data;
    const norm = cache.get("normalized", l, "ln1").data;
    for (let r = 0; r < B * T; r++) {
      let mean = 0;
      for (let i = 0; i < d; i++) mean += resid[r * d + i] / d;
      for (let i = 0; i < d; i++) {
        const want = resid[r * d + i] - mean;
        assert.ok(Math.abs(norm[r * d + i] * scale[r] - want) < 1e-5 * (1 + Math.abs(want)));
      }
    }
    // resid_post = resid_mid + mlp_out = resid_pre + attn_out + mlp_out, as float32 adds.
    const mid = cache.get("resid_mid", l).data, post = cache.get("resid_post", l).data;
    const attnOut = cache.get("attn_out", l).data, mlpOut = cache.get("mlp_out", l).data;
    for (let i = 0; i < mid.length; i++) {
      assert.equal(mid[i], Math.fround(resid[i] + attnOut[i]));
      assert.equal(post[i], Math.fround(mid[i] + mlpOut[i]));
    }
  }
  model.dispose();
});
