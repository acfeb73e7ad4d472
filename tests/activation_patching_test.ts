/**
 * Activation patching (TransformerLens's `patching` module) on tiny-hf-f32 with the
 * logit-difference metric of `tiny-tl-golden.json`: every grid against float64 references
 * (tiny-tl-golden.json's resid_pre, attn_out, mlp_out and head-output grids; the rest from
 * tl-toolkit/reference.json, whose script reproduces the golden grids to 5e-12 first), the
 * fast path against a `runWithHooks` loop, and bad input.
 *
 * Tolerance: the metric is a difference of two logits of magnitude ~2 computed in float32; the
 * observed error is ~3e-7, so 2e-6 absolute (about 1e-6 of the logits' scale) has margin.
 */
import assert from "node:assert/strict";
import {
  genericActivationPatch,
  getActPatchAttnHeadAllPosEvery,
  getActPatchAttnHeadByPosEvery,
  getActPatchAttnHeadKAllPos,
  getActPatchAttnHeadKByPos,
  getActPatchAttnHeadOutAllPos,
  getActPatchAttnHeadOutByPos,
  getActPatchAttnHeadPatternAllPos,
  getActPatchAttnHeadPatternByPos,
  getActPatchAttnHeadPatternDestSrcPos,
  getActPatchAttnHeadQAllPos,
  getActPatchAttnHeadQByPos,
  getActPatchAttnHeadVAllPos,
  getActPatchAttnHeadVByPos,
  getActPatchAttnOut,
  getActPatchBlockEvery,
  getActPatchMlpOut,
  getActPatchResidMid,
  getActPatchResidPre,
  HookedTransformer,
  InputError,
  layerHeadDestSrcPosPatternPatchSetter,
  layerPosPatchSetter,
} from "../mod.ts";
import type { PatchSetter, Tensor } from "../mod.ts";
import { fixturePath } from "./fixtures.ts";

const golden = JSON.parse(Deno.readTextFileSync(fixturePath("tiny-tl-golden.json")));
const ref = JSON.parse(Deno.readTextFileSync(fixturePath("tl-toolkit/reference.json")));
const TOL = 2e-6;

const dir = fixturePath("tiny-hf-f32");
const model = await HookedTransformer.fromBytes(
  JSON.parse(Deno.readTextFileSync(`${dir}/config.json`)),
  Deno.readFileSync(`${dir}/model.safetensors`),
  { name: "tiny-hf-f32", threads: 1 },
);
const { cache } = await model.runWithCache(golden.tokens);
const corrupted: number[][] = golden.corrupted_tokens;

/** The golden metric: mean over the batch of logit(answer) - logit(wrong) at the last position. */
function logitDiff(logits: Tensor): number {
  const [B, T, V] = logits.shape;
  let s = 0;
  for (let b = 0; b < B; b++) {
    const row = (b * T + T - 1) * V;
    s += logits.data[row + golden.answer_tokens[b]] - logits.data[row + golden.wrong_tokens[b]];
  }
  return s / B;
}

function assertGrid(actual: Tensor, shape: number[], expected: number[], what: string) {
  assert.deepEqual(actual.shape, shape, `${what}: shape`);
  let worst = 0;
  expected.forEach((v, i) => worst = Math.max(worst, Math.abs(actual.data[i] - v)));
  assert.ok(worst < TOL, `${what}: max error ${worst}`);
}

const G = golden.activation_patching, P = ref.activation_patching;

Deno.test("residual-stream grids equal TL's [n_layers, pos]", async () => {
  for (
    const [name, f, expected] of [
      ["resid_pre", getActPatchResidPre, G.resid_pre],
      ["resid_mid", getActPatchResidMid, P.resid_mid],
      ["attn_out", getActPatchAttnOut, G.attn_out],
      ["mlp_out", getActPatchMlpOut, G.mlp_out],
    ] as const
  ) {
    assertGrid(await f(model, corrupted, cache, logitDiff), [2, 12], expected.flat(), name);
  }
  // The metric reads only the last position: unembedding only it gives the same grid.
  const last = await getActPatchAttnOut(model, corrupted, cache, logitDiff, {
    logitPositions: [-1],
  });
  assertGrid(last, [2, 12], G.attn_out.flat(), "attn_out, last position's logits only");
  // Logits at positions left out are the corrupted run's: a metric of position 1 sees no patch.
  const first = (l: Tensor) => l.data[96 + 5];
  const skipped = await getActPatchResidPre(model, corrupted, cache, first, {
    logitPositions: [-1],
  });
  const corruptedFirst = (await model.run(corrupted)).data[96 + 5];
  assert.ok(skipped.data.every((v) => Math.abs(v - corruptedFirst) < 1e-6));
  const full = await getActPatchResidPre(model, corrupted, cache, first);
  assert.ok(Math.abs(full.data[1] - corruptedFirst) > 1e-3, "patching position 1 moves its logits");
  const every = await getActPatchBlockEvery(model, corrupted, cache, logitDiff);
  assertGrid(every, [3, 2, 12], [G.resid_pre, G.attn_out, G.mlp_out].flat(2), "block every");
});

Deno.test("head grids (z, q, k, v, pattern) equal TL's, all positions and by position", async () => {
  const cases = [
    ["z all", getActPatchAttnHeadOutAllPos, [2, 4], G.attn_head_out_all_pos],
    ["z by pos", getActPatchAttnHeadOutByPos, [2, 12, 4], G.attn_head_out_by_pos],
    ["q all", getActPatchAttnHeadQAllPos, [2, 4], P.q_all_pos],
    ["q by pos", getActPatchAttnHeadQByPos, [2, 12, 4], P.q_by_pos],
    ["k all", getActPatchAttnHeadKAllPos, [2, 4], P.k_all_pos],
    ["k by pos", getActPatchAttnHeadKByPos, [2, 12, 4], P.k_by_pos],
    ["v all", getActPatchAttnHeadVAllPos, [2, 4], P.v_all_pos],
    ["v by pos", getActPatchAttnHeadVByPos, [2, 12, 4], P.v_by_pos],
    ["pattern all", getActPatchAttnHeadPatternAllPos, [2, 4], P.pattern_all_pos],
    ["pattern by pos", getActPatchAttnHeadPatternByPos, [2, 4, 12], P.pattern_by_pos],
  ] as const;
  for (const [name, f, shape, expected] of cases) {
    assertGrid(await f(model, corrupted, cache, logitDiff), [...shape], expected.flat(2), name);
  }
  const allPos = await getActPatchAttnHeadAllPosEvery(model, corrupted, cache, logitDiff);
  assertGrid(
    allPos,
    [5, 2, 4],
    [G.attn_head_out_all_pos, P.q_all_pos, P.k_all_pos, P.v_all_pos, P.pattern_all_pos].flat(2),
    "all pos every",
  );
  const byPos = await getActPatchAttnHeadByPosEvery(model, corrupted, cache, logitDiff);
  assert.deepEqual(byPos.shape, [5, 2, 12, 4]);
  // The pattern grid is moved to [layer, pos, head].
  for (const [l, t, h] of [[0, 3, 1], [1, 11, 3]]) {
    const v = byPos.data[((4 * 2 + l) * 12 + t) * 4 + h];
    assert.ok(Math.abs(v - P.pattern_by_pos[l][h][t]) < TOL);
  }
});

Deno.test("the resumed path equals a runWithHooks loop, for a metric object and explicit indices", async () => {
  // Single pattern entries: the fast path (pattern edits in resumed runs) against full hooked runs.
  const indices = [[0, 2, 5, 3], [1, 1, 11, 0], [1, 3, 7, 7]];
  const metric = { value: logitDiff, grad: (l: Tensor) => l };
  const fast = await genericActivationPatch(model, corrupted, cache, metric, {
    patchSetter: layerHeadDestSrcPosPatternPatchSetter,
    activationName: "pattern",
    indices,
  });
  assert.deepEqual(fast.shape, [3]);
  for (const [i, [l, h, q, k]] of indices.entries()) {
    const clean = cache.get("pattern", l);
    const logits = (await model.runWithHooks(corrupted, {
      fwdHooks: [[`blocks.${l}.attn.hook_pattern`, (act) => {
        for (let b = 0; b < 2; b++) {
          const o = ((b * 4 + h) * 12 + q) * 12 + k;
          act.data[o] = clean.data[o];
        }
      }]],
    }))!;
    assert.ok(Math.abs(fast.data[i] - logitDiff(logits)) < TOL, `index ${indices[i]}`);
  }
  // A setter of the user's own runs as a hook, and gives the same grid as the library's.
  const own: PatchSetter = (act, index, clean) => layerPosPatchSetter(act, index, clean);
  const viaHook = await genericActivationPatch(model, corrupted, cache, logitDiff, {
    patchSetter: own,
    activationName: "mlp_out",
    indexAxisNames: ["layer", "pos"],
  });
  assertGrid(viaHook, [2, 12], G.mlp_out.flat(), "own setter");
  // Patches of other row activations (MLP neurons) agree between the two paths.
  const args = { activationName: "post", indexAxisNames: ["layer", "pos"] as ["layer", "pos"] };
  const a = await genericActivationPatch(model, corrupted, cache, logitDiff, {
    patchSetter: layerPosPatchSetter,
    ...args,
  });
  const b = await genericActivationPatch(model, corrupted, cache, logitDiff, {
    patchSetter: own,
    ...args,
  });
  a.data.forEach((v, i) => assert.ok(Math.abs(v - b.data[i]) < TOL));
  const destSrc = await getActPatchAttnHeadPatternDestSrcPos(model, corrupted, cache, logitDiff);
  assert.deepEqual(destSrc.shape, [2, 4, 12, 12]);
  assert.ok(Math.abs(destSrc.data[((0 * 4 + 2) * 12 + 5) * 12 + 3] - fast.data[0]) < TOL);
});

Deno.test("bad input: typed errors naming the problem", async () => {
  const nan = () => NaN;
  await assert.rejects(
    () => getActPatchResidPre(model, corrupted, cache, nan),
    /metric returned NaN/,
  );
  await assert.rejects(
    () => getActPatchResidPre(model, corrupted, cache, (() => [1]) as never),
    /number or a one-element Tensor/,
  );
  await assert.rejects(
    () => getActPatchResidPre(model, corrupted[0].slice(0, 10), cache, logitDiff),
    /same shape/,
  );
  await assert.rejects(() => getActPatchResidPre(model, corrupted, cache, {} as never), InputError);
  await assert.rejects(
    () => getActPatchResidPre(model, corrupted, cache, logitDiff, { logitPositions: [12] }),
    /outside \[-12, 12\)/,
  );
  await assert.rejects(
    () => getActPatchResidPre(model, corrupted, cache, logitDiff, { on_progress: 1 } as never),
    /did you mean onProgress/,
  );
  await assert.rejects(
    () =>
      genericActivationPatch(model, corrupted, cache, logitDiff, {
        patchSetter: layerPosPatchSetter,
        activationName: "result",
        indexAxisNames: ["layer", "pos"],
      }),
    /setUseAttnResult/,
  );
  const { cache: partial } = await model.runWithCache(golden.tokens, {
    namesFilter: "blocks.0.hook_mlp_out",
  });
  await assert.rejects(
    () => getActPatchMlpOut(model, corrupted, partial, logitDiff),
    /blocks.1.hook_mlp_out/,
  );
});
