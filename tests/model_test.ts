/**
 * HookedTransformer behaviour beyond the golden numbers: input validation before compute, hooks
 * and caches with TransformerLens's names and shapes, patching semantics, the embedded model, and
 * GPT-2-small shape in WebAssembly memory.
 */
import type { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import assert from "node:assert/strict";
import {
  ConfigError,
  getActName,
  HookedTransformer,
  HookError,
  InputError,
  syntheticGpt2,
  WeightsError,
} from "../mod.ts";
import { patchedNextTokenLogProbs } from "../model/patching.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { parseSafetensors } from "../io/safetensors.ts";
import { fixturePath } from "./fixtures.ts";

async function tinyModel(): Promise<HookedTransformer> {
  const dir = fixturePath("tiny-hf-f32");
  return await HookedTransformer.fromBytes(
    JSON.parse(await Deno.readTextFile(`${dir}/config.json`)),
    await Deno.readFile(`${dir}/model.safetensors`),
    { name: "tiny-hf-f32" },
  );
}

function logSoftmaxAt(row: Float32Array, target: number): number {
  let m = -Infinity;
  for (const v of row) m = Math.max(m, v);
  let s = 0;
  for (const v of row) s += Math.exp(v - m);
  return row[target] - m - Math.log(s);
}

Deno.test("bad tokens are InputErrors naming the problem", async () => {
  const model = await tinyModel();
  await assert.rejects(() => model.run([[1, 2, 96]]), InputError, "token id 96 at [0, 2]");
  await assert.rejects(() => model.run([[1, -1]]), InputError, "outside the vocabulary");
  await assert.rejects(() => model.run([[1, 2.5]]), InputError);
  await assert.rejects(() => model.run([[1, 2], [3]]), InputError, "ragged batch");
  await assert.rejects(() => model.run([]), InputError, "empty");
  await assert.rejects(
    () => model.run([Array.from({ length: 33 }, () => 1)]),
    InputError,
    "longer than the model's context n_ctx = 32",
  );
  await assert.rejects(
    () => model.run({ data: new Int32Array(5), shape: [2, 3] }),
    InputError,
    "needs 6",
  );
});

Deno.test("unknown hook names are HookErrors with a suggestion, before any compute", async () => {
  const model = await tinyModel();
  let called = 0;
  await assert.rejects(
    () =>
      model.runWithHooks([[1, 2]], {
        fwdHooks: [["blocks.0.hook_mlp_out", () => void called++], [
          "blocks.0.hook_mlp_outt",
          () => {},
        ]],
      }),
    HookError,
    'did you mean "blocks.0.hook_mlp_out"',
  );
  assert.equal(called, 0);
  await assert.rejects(
    () => model.runWithCache([[1, 2]], { namesFilter: ["blocks.9.hook_resid_pre"] }),
    HookError,
  );
  assert.throws(() => getActName("mlp_outt", 0), HookError);
  const { cache } = await model.runWithCache([[1, 2]], { namesFilter: "blocks.0.attn.hook_z" });
  assert.throws(() => cache.get("pattern", 0), HookError, "not in this cache");
});

Deno.test("cache holds every hook point with TransformerLens's shapes", async () => {
  const model = await tinyModel();
  const { cache } = await model.runWithCache([[1, 2, 3], [4, 5, 6]]);
  assert.equal(cache.size, model.hookNames.length);
  assert.equal(model.hookNames.length, 2 + 17 * 2 + 2);
  assert.deepEqual(cache.get("hook_embed").shape, [2, 3, 32]);
  assert.deepEqual(cache.get("q", 1).shape, [2, 3, 4, 8]);
  assert.deepEqual(cache.get("z", 1).shape, [2, 3, 4, 8]);
  assert.deepEqual(cache.get("pattern", 0).shape, [2, 4, 3, 3]);
  assert.deepEqual(cache.get("attn_scores", 0).shape, [2, 4, 3, 3]);
  assert.deepEqual(cache.get("pre", 0).shape, [2, 3, 128]);
  assert.deepEqual(cache.get("scale", 0, "ln1").shape, [2, 3, 1]);
  assert.deepEqual(cache.get("ln_final.hook_normalized").shape, [2, 3, 32]);
  // Masked scores are -inf and the pattern is their softmax.
  const scores = cache.get("attn_scores", 0).data;
  assert.equal(scores[1], -Infinity);
  // resid_mid = resid_pre + attn_out; resid_post = resid_mid + mlp_out (the same float32 adds).
  const pre = cache.get("resid_pre", 1).data;
  const attn = cache.get("attn_out", 1).data;
  const mid = cache.get("resid_mid", 1).data;
  for (let i = 0; i < mid.length; i++) assert.equal(mid[i], Math.fround(pre[i] + attn[i]));
  // q = normalized @ W_Q + b_Q for head 2, position 1 of sequence 0 (float64 reference).
  const x = cache.get("normalized", 1, "ln1").data;
  const q = cache.get("q", 1).data;
  const WQ = model.W_Q.data;
  const bQ = model.b_Q.data;
  const d = 32, dh = 8, h = 2, pos = 1;
  for (let j = 0; j < dh; j++) {
    let s = bQ[(1 * 4 + h) * dh + j];
    for (let i = 0; i < d; i++) s += x[pos * d + i] * WQ[((1 * 4 + h) * d + i) * dh + j];
    assert.ok(Math.abs(q[(pos * 4 + h) * dh + j] - s) < 1e-5);
  }
});

Deno.test("hooks patch: returned replacements and in-place edits both flow forward", async () => {
  const model = await tinyModel();
  const tokens = [[1, 2, 3, 4]];
  const clean = await model.run(tokens);
  const zeroed = await model.runWithHooks(tokens, {
    fwdHooks: [[
      getActName("mlp_out", 1),
      (a) => ({ data: new Float32Array(a.data.length), shape: a.shape }),
    ]],
  });
  const inPlace = await model.runWithHooks(tokens, {
    fwdHooks: [[(n) => n === "blocks.1.hook_mlp_out", (a) => void a.data.fill(0)]],
  });
  assert.deepEqual(zeroed!.data, inPlace!.data);
  assert.notDeepEqual(zeroed!.data, clean.data);
  // A hook that returns the activation unchanged changes nothing.
  const same = await model.runWithHooks(tokens, { fwdHooks: [[() => true, (a) => a]] });
  assert.deepEqual(same!.data, clean.data);
  // Patching the pattern recomputes z from it.
  const uniform = await model.runWithHooks(tokens, {
    fwdHooks: [["blocks.0.attn.hook_pattern", (p) => {
      const T = 4;
      for (let i = 0; i < p.data.length; i++) {
        const q = Math.floor(i / T) % T, k = i % T;
        p.data[i] = k <= q ? 1 / (q + 1) : 0;
      }
    }]],
  });
  assert.notDeepEqual(uniform!.data, clean.data);
  await assert.rejects(
    () =>
      model.runWithHooks(tokens, {
        fwdHooks: [["hook_embed", () => ({ data: new Float32Array(3), shape: [3] })]],
      }),
    HookError,
    "must keep the shape",
  );
});

Deno.test("returnType none skips the unembedding; weights accessors have TransformerLens shapes", async () => {
  const model = await tinyModel();
  const { logits } = await model.runWithCache([[1, 2]], { namesFilter: [], returnType: "none" });
  assert.equal(logits, null);
  assert.deepEqual(model.W_Q.shape, [2, 4, 32, 8]);
  assert.deepEqual(model.W_O.shape, [2, 4, 8, 32]);
  assert.deepEqual(model.W_in.shape, [2, 32, 128]);
  assert.deepEqual(model.W_U.shape, [32, 96]);
  assert.deepEqual(model.b_O.shape, [2, 32]);
  // Processed: b_V folded away, W_U centred over the vocabulary, W_E centred over d_model.
  assert.ok(model.b_V.data.every((v) => v === 0));
  const WE = model.W_E.data;
  let rowMean = 0;
  for (let i = 0; i < 32; i++) rowMean += WE[i];
  assert.ok(Math.abs(rowMean / 32) < 1e-6);
});

Deno.test("a config that does not match the weights is a ConfigError naming the tensor", async () => {
  const dir = fixturePath("tiny-hf-f32");
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  const bytes = await Deno.readFile(`${dir}/model.safetensors`);
  await assert.rejects(
    () => HookedTransformer.fromBytes({ ...config, n_embd: 64 }, bytes),
    ConfigError,
    "transformer.wte.weight",
  );
  await assert.rejects(
    () => HookedTransformer.fromBytes({ ...config, n_layer: 1 }, bytes),
    ConfigError,
    "n_layer 1",
  );
  await assert.rejects(
    () => HookedTransformer.fromBytes({ ...config, n_layer: 3 }, bytes),
    // Refused before allocating: 3 layers need more values than the checkpoint holds.
    ConfigError,
    "3 layers",
  );
  await assert.rejects(
    () => HookedTransformer.fromBytes({ ...config, activation_function: "relu" }, bytes),
    ConfigError,
    "gelu_new",
  );
  await assert.rejects(
    () => HookedTransformer.fromBytes({ ...config, n_head: 5 }, bytes),
    ConfigError,
  );
  await assert.rejects(
    () => HookedTransformer.fromBytes({ ...config, n_positions: -1 }, bytes),
    ConfigError,
  );
  // A missing tensor names its key.
  const file = parseSafetensors(bytes);
  const kept = file.names().filter((n) => n !== "transformer.h.1.mlp.c_fc.bias")
    .map((n) => [n, file.tensor(n)] as [string, ReturnType<typeof file.tensor>]);
  await assert.rejects(
    () => HookedTransformer.fromBytes(config, writeSafetensors(kept)),
    WeightsError,
    "transformer.h.1.mlp.c_fc.bias",
  );
});

Deno.test("an explicit lm_head.weight is used instead of the tied embedding", async () => {
  const dir = fixturePath("tiny-hf-f32");
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  const file = parseSafetensors(await Deno.readFile(`${dir}/model.safetensors`));
  const tensors = file.names().map((n) =>
    [n, file.tensor(n)] as [string, ReturnType<typeof file.tensor>]
  );
  const head = file.tensor("transformer.wte.weight");
  for (let i = 0; i < head.data.length; i++) head.data[i] *= 2;
  const opts = {
    foldLn: false,
    centerWritingWeights: false,
    centerUnembed: false,
    foldValueBiases: false,
  };
  const tied = await HookedTransformer.fromBytes(config, writeSafetensors(tensors), opts);
  const untied = await HookedTransformer.fromBytes(
    config,
    writeSafetensors([...tensors, ["lm_head.weight", head]]),
    opts,
  );
  const a = (await tied.run([[1, 2]])).data;
  const b = (await untied.run([[1, 2]])).data;
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(b[i] - 2 * a[i]) < 1e-4);
});

Deno.test("patching fast path equals the naive runWithHooks path", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy");
  const S = 8;
  const r = Array.from({ length: S }, (_, i) => (i * 37 + 11) % 2047);
  const toks = [model.cfg.bosTokenId, ...r, ...r];
  const T = toks.length;
  const d = model.cfg.dModel;
  const { cache } = await model.runWithCache([toks]);
  for (const point of ["resid_pre", "resid_mid", "attn_out", "mlp_out"] as const) {
    for (const layer of [0, model.cfg.nLayers - 1]) {
      const name = getActName(point, layer);
      const act = cache.get(name).data;
      const patches: { position: number; value: Float32Array }[] = [];
      for (let p = S; p < 2 * S; p++) {
        patches.push({ position: p, value: act.slice((p - S) * d, (p - S + 1) * d) });
      }
      const fast = await patchedNextTokenLogProbs(
        model,
        { data: Int32Array.from(toks), shape: [1, T] },
        [{ layer, point, patches }],
        { from: S },
      );
      for (let i = 0; i < patches.length; i++) {
        const p = patches[i];
        const logits = (await model.runWithHooks([toks], {
          fwdHooks: [[name, (a) => void a.data.set(p.value, p.position * d)]],
        }))!.data;
        const V = model.cfg.dVocab;
        for (let t = S; t < T - 1; t++) {
          const naive = logSoftmaxAt(logits.subarray(t * V, (t + 1) * V), toks[t + 1]);
          assert.ok(
            Math.abs(naive - fast.patched[0][i][t]) < 1e-5,
            `${name} p=${p.position} t=${t}`,
          );
        }
      }
    }
  }
});

Deno.test("patched log-probs at the last positions and from position 0 equal the naive path", async () => {
  // Resumed runs stop before the last position (no log-prob reads it); a patch there changes
  // nothing asked for, and one at T - 2 or 0 must still match a full runWithHooks.
  const model = await HookedTransformer.fromPretrained("induction-toy");
  const toks = [model.cfg.bosTokenId, 5, 9, 13, 5, 9, 13, 21];
  const T = toks.length, d = model.cfg.dModel, V = model.cfg.dVocab;
  const value = Float32Array.from({ length: d }, (_, i) => Math.sin(i) * 3);
  const positions = [T - 1, T - 2, 0];
  // mlp_out of the last layer resumes after every block: each run is its patched row alone.
  const L = model.cfg.nLayers;
  for (const [point, layer] of [["resid_pre", 1], ["mlp_out", 1], ["mlp_out", L - 1]] as const) {
    const patches = positions.map((position) => ({ position, value }));
    const fast = await patchedNextTokenLogProbs(model, [toks], [{ layer, point, patches }]);
    assert.deepEqual(fast.patched[0][0], fast.clean, `${point}: a patch at T - 1 changes nothing`);
    for (const [i, p] of positions.entries()) {
      const logits = (await model.runWithHooks([toks], {
        fwdHooks: [[getActName(point, layer), (a) => void a.data.set(value, p * d)]],
      }))!.data;
      for (let t = 0; t < T - 1; t++) {
        const naive = logSoftmaxAt(logits.subarray(t * V, (t + 1) * V), toks[t + 1]);
        // float32 rounding of the same sums in another order: the fast path test's 1e-5
        assert.ok(Math.abs(naive - fast.patched[0][i][t]) < 1e-5, `${point} p=${p} t=${t}`);
      }
    }
    // Log-probs before `from` are the clean ones, so is a patch whose row is before it.
    const late = await patchedNextTokenLogProbs(model, [toks], [{ layer, point, patches }], {
      from: 3,
    });
    assert.deepEqual(late.patched[0][1].subarray(3), fast.patched[0][1].subarray(3));
    assert.deepEqual(late.patched[0][2].subarray(0, 3), fast.clean.subarray(0, 3));
  }
});

Deno.test("GPT-2-small shape loads and runs 30 x 101 tokens in WebAssembly memory", async () => {
  const { config, weights } = syntheticGpt2({
    nLayers: 12,
    nHeads: 12,
    dModel: 768,
    dVocab: 50257,
    nCtx: 1024,
    seed: 1,
  });
  const model = await HookedTransformer.fromBytes(config, weights, { name: "gpt2-small-shape" });
  const tokens = Array.from(
    { length: 30 },
    (_, b) => Array.from({ length: 101 }, (_, t) => (b * 7919 + t * 104729) % 50257),
  );
  const logits = await model.run(tokens);
  assert.deepEqual(logits.shape, [30, 101, 50257]);
  assert.ok(logits.data.every(Number.isFinite));
  assert.ok((model.backend as WasmBackend).memoryBytes < 4 * 2 ** 30);
});

Deno.test("calls started together are served one at a time, each as if alone", async () => {
  // A pass awaits its host reads and its scopes nest on the backend's one stack: runs, a
  // generation and patched runs started at once must not interleave (exclusive.ts).
  const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
  const a = [[2047, 5, 9, 13, 5, 9, 13, 5]], b = [[2047, 7, 8, 7, 8, 7, 8, 7, 8, 1, 2, 3]];
  const hook = () => {};
  const optsA = { fwdHooks: model.hookNames.map((n) => [n, hook] as [string, () => void]) };
  const optsB = { fwdHooks: [["blocks.1.hook_attn_out", hook] as [string, () => void]] };
  const alone = [
    await model.runWithHooks(a, optsA),
    await model.runWithHooks(b, optsB),
    await model.generate(b, { maxNewTokens: 3, temperature: 0 }),
    (await model.runWithCache(a)).cache.get("blocks.0.attn.hook_pattern").data,
  ];
  for (let k = 0; k < 3; k++) {
    const together = await Promise.all([
      model.runWithHooks(a, optsA),
      model.runWithHooks(b, optsB),
      model.generate(b, { maxNewTokens: 3, temperature: 0 }),
      model.runWithCache(a).then((r) => r.cache.get("blocks.0.attn.hook_pattern").data),
    ]);
    assert.deepEqual(together, alone);
  }
  model.dispose();
});
