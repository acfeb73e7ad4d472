/**
 * patchingScores: the fast path (resumed runs, clean K/V reuse, logits only where the loss reads
 * them) equals the naive path (a full `runWithHooks` per patch) for every hook and alignment.
 */
import assert from "node:assert/strict";
import {
  generateRepeatedTokens,
  getActName,
  HookedTransformer,
  InputError,
  patchingScores,
  patchPositions,
} from "../mod.ts";
import type { PatchAlignment } from "../mod.ts";
import type { PatchPoint } from "../model/patching.ts";

/** mean over t in [seqLen, 2 seqLen) of -log softmax(logits[0, t])[tokens[t + 1]], float64. */
function repeatLoss(logits: Float32Array, ids: Int32Array, seqLen: number, V: number): number {
  let s = 0;
  for (let t = seqLen; t < 2 * seqLen; t++) {
    const row = logits.subarray(t * V, (t + 1) * V);
    let m = -Infinity;
    for (const v of row) m = Math.max(m, v);
    let z = 0;
    for (const v of row) z += Math.exp(v - m);
    s -= row[ids[t + 1]] - m - Math.log(z);
  }
  return s / seqLen;
}

async function naive(
  model: HookedTransformer,
  ids: Int32Array,
  seqLen: number,
  hook: PatchPoint,
  alignment: PatchAlignment,
): Promise<number[][]> {
  const T = ids.length, d = model.cfg.dModel, V = model.cfg.dVocab;
  const tokens = { data: ids, shape: [1, T] };
  const clean = repeatLoss((await model.run(tokens)).data, ids, seqLen, V);
  const { cache } = await model.runWithCache(tokens, { returnType: "none" });
  const out: number[][] = [];
  for (let l = 0; l < model.cfg.nLayers; l++) {
    const name = getActName(hook, l);
    const act = cache.get(name).data;
    const row: number[] = [];
    for (let j = 0; j < seqLen; j++) {
      const p = alignment === "study" ? seqLen + j : seqLen + 1 + j;
      const src = p - seqLen;
      const logits = await model.runWithHooks(tokens, {
        fwdHooks: [[name, (a) => void a.data.set(act.subarray(src * d, (src + 1) * d), p * d)]],
      });
      row.push(repeatLoss(logits!.data, ids, seqLen, V) - clean);
    }
    out.push(row);
  }
  return out;
}

Deno.test("patching: fast path equals naive runWithHooks for all hooks and alignments", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy");
  const seqLen = 6;
  const tokens = generateRepeatedTokens(model, seqLen, 2, { seed: 9 });
  const first = tokens.data.slice(0, 2 * seqLen + 1);
  let worst = 0;
  for (const hook of ["mlp_out", "attn_out", "resid_pre", "resid_mid"] as const) {
    for (const alignment of ["study", "aligned"] as const) {
      let calls = 0;
      const fast = await patchingScores(model, tokens, seqLen, {
        hook,
        alignment,
        onProgress: (done, total) => {
          assert.equal(total, 3);
          assert.equal(done, calls++);
        },
      });
      assert.equal(calls, 4);
      const slow = await naive(model, first, seqLen, hook, alignment);
      assert.equal(fast.length, 3);
      for (let l = 0; l < 3; l++) {
        assert.equal(fast[l].length, seqLen);
        for (let j = 0; j < seqLen; j++) {
          const diff = Math.abs(fast[l][j] - slow[l][j]);
          worst = Math.max(worst, diff);
          assert.ok(
            diff < 1e-5,
            `${hook} ${alignment} [${l}][${j}]: ${fast[l][j]} vs ${slow[l][j]}`,
          );
        }
      }
      // Patching a position with the same token's earlier residual stream changes the loss.
      if (hook === "resid_pre" && alignment === "aligned") {
        assert.ok(fast[0].some((v) => Math.abs(v) > 1e-3));
      }
    }
  }
  console.log(`patching fast vs naive: worst difference ${worst.toExponential(2)}`);
});

Deno.test("patchPositions: the study's first column patches from BOS", () => {
  assert.deepEqual(patchPositions(4, "study"), { targets: [4, 5, 6, 7], sources: [0, 1, 2, 3] });
  assert.deepEqual(patchPositions(4, "aligned"), { targets: [5, 6, 7, 8], sources: [1, 2, 3, 4] });
  assert.throws(() => patchPositions(4, "other" as PatchAlignment), InputError);
});

Deno.test("patchingScores: the toy model's MLPs move the repeated half's loss", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy");
  const tokens = generateRepeatedTokens(model, 50, 1, { seed: 0 });
  const s = await patchingScores(model, tokens, 50);
  assert.equal(s.length, 3);
  const biggest = Math.max(...s.flat().map(Math.abs));
  // The card: "patching their outputs moves the loss by up to about 0.2 nats".
  assert.ok(biggest > 0.1 && biggest < 0.4, `largest |score| ${biggest}`);
  await assert.rejects(
    () => patchingScores(model, tokens, 50, { hook: "hook_z" as PatchPoint }),
    InputError,
  );
});
