/**
 * Grouped-query attention in the circuit tools (issue 20, item 1): on the tiny Llama and Qwen2
 * fixtures (4 query heads sharing 2 key/value heads), `model.OV` and `model.QK` are
 * [n_layers, n_heads, d_model, d_model] factored matrices built from the repeated key/value head,
 * as TransformerLens's `model.OV` / `model.QK` (which read `W_V` / `W_K`, already repeated), and
 * `allCompositionScores` equals the definition computed directly in float64 from the full d x d
 * circuits.
 */
import assert from "node:assert/strict";
import { allCompositionScores } from "../analysis/composition.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { loadFamily } from "./families_fixtures.ts";
import { compositionScoreDefinition, mm, transposed } from "./float64.ts";
import { maxAbsDiff } from "./assertions.ts";

/** W[l, h] of a stacked [L, heads, r, c] weight, as float64. */
function at(W: { data: Float32Array; shape: number[] }, l: number, h: number): Float64Array {
  const [, heads, r, c] = W.shape;
  const off = (l * heads + h) * r * c;
  return Float64Array.from(W.data.subarray(off, off + r * c));
}

/** Each head's OV and QK circuits from the stored (unrepeated) key/value weights, float64. */
function circuits(model: HookedTransformer) {
  const { nLayers: L, nHeads: H, nKeyValueHeads: K, dModel: d, dHead: e } = model.cfg;
  const ov: Float64Array[][] = [], qk: Float64Array[][] = [];
  for (let l = 0; l < L; l++) {
    ov.push([]);
    qk.push([]);
    for (let h = 0; h < H; h++) {
      const kv = Math.floor(h / (H / K)); // TL's repeat_interleave: query head h reads kv head h // (H / K)
      ov[l].push(mm(at(model._W_V, l, kv), at(model.W_O, l, h), d, e, d));
      qk[l].push(mm(at(model.W_Q, l, h), transposed(at(model._W_K, l, kv), d, e), d, e, d));
    }
  }
  return { ov, qk };
}

for (const dir of ["tiny-llama", "tiny-qwen2"]) {
  Deno.test(`${dir}: OV and QK are per query head, from the repeated key/value heads`, async () => {
    const model = await loadFamily(dir, true);
    const { nLayers: L, nHeads: H, nKeyValueHeads: K, dModel: d } = model.cfg;
    assert.ok(K < H, "the fixture has grouped-query attention");
    const { ov, qk } = circuits(model);
    assert.deepEqual(model.OV.shape, [L, H, d, d]);
    assert.deepEqual(model.QK.shape, [L, H, d, d]);
    const OV = model.OV.AB, QK = model.QK.AB;
    let worst = 0;
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < H; h++) {
        const off = (l * H + h) * d * d;
        for (let i = 0; i < d * d; i++) {
          // float32 products of length d_head = 8 of O(0.1) values: 1e-6 is ~50 ulps of the sums.
          worst = Math.max(worst, Math.abs(OV.data[off + i] - ov[l][h][i]));
          worst = Math.max(worst, Math.abs(QK.data[off + i] - qk[l][h][i]));
        }
      }
    }
    assert.ok(worst < 1e-6, `worst |OV/QK - W_V W_O / W_Q W_K^T| = ${worst}`);
    // Heads that share a key/value head differ only through W_O (OV) or W_Q (QK).
    assert.notDeepEqual(
      Array.from(OV.data.subarray(0, d * d)),
      Array.from(OV.data.subarray(d * d, 2 * d * d)),
    );
  });

  Deno.test(`${dir}: allCompositionScores equals the definition on the d x d circuits`, async () => {
    const model = await loadFamily(dir, true);
    const { nLayers: L, nHeads: H, dModel: d } = model.cfg;
    const { ov, qk } = circuits(model);
    for (const mode of ["Q", "K", "V"] as const) {
      const got = allCompositionScores(model, mode);
      assert.deepEqual(got.shape, [L, H, L, H]);
      const want = compositionScoreDefinition(mode, (l, h) => ov[l][h], (l, h) => qk[l][h], {
        L,
        H,
        d,
      });
      const worst = maxAbsDiff(got.data, want);
      // Scores are ratios in [0, 1] from float32 reduced factors: 1e-5 relative to 1.
      assert.ok(worst < 1e-5, `${mode}: worst |score - definition| = ${worst}`);
    }
  });
}
