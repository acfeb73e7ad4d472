/**
 * Runs with gradients: backward hooks, forward patches with gradients, the chunked and full-logit
 * metric paths, namesFilter, 1 vs 2 threads, and errors that leave the model working.
 */
import assert from "node:assert/strict";
import { HookError, InputError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { logitDiffMetric, logProbMetric, lossMetric, type Metric } from "../model/metrics.ts";
import type { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";
import { repoFixturePath } from "./fixtures.ts";
import { bitsEqual } from "./assertions.ts";

// deno-lint-ignore no-explicit-any
const golden: any = JSON.parse(Deno.readTextFileSync(repoFixturePath("tiny-tl-golden.json")));
const tokens: number[][] = golden.tokens;

async function tiny(threads = 1): Promise<HookedTransformer> {
  const dir = repoFixturePath("tiny-hf-f32");
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  return await HookedTransformer.fromBytes(
    config,
    await Deno.readFile(`${dir}/model.safetensors`),
    {
      threads,
    },
  );
}

function maxRel(a: Float32Array, b: Float32Array): number {
  let err = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return scale ? err / scale : err;
}

async function lossGrads(model: HookedTransformer, toks = tokens) {
  return (await model.runWithCache(toks, { returnType: "loss", inclBwdCache: true })).cache;
}

Deno.test("a backward hook that doubles the final gradient doubles every gradient before it", async () => {
  const model = await tiny();
  const plain = await lossGrads(model);
  const { cache } = await model.runWithCache(tokens, { returnType: "loss", inclBwdCache: true });
  let seen = 0;
  const loss = await model.runWithHooks(tokens, {
    returnType: "loss",
    bwdHooks: [
      ["ln_final.hook_normalized", (g) => ({ data: g.data.map((v) => 2 * v), shape: g.shape })],
      [(name) => name.endsWith("hook_resid_pre"), (g, hook) => {
        seen++;
        const want = plain.get(`${hook.name}_grad`).data.map((v) => 2 * v);
        // linear all the way, and doubling is exact in float32
        bitsEqual(g.data, want, hook.name);
      }],
    ],
  });
  assert.equal(seen, model.cfg.nLayers);
  assert.equal(typeof loss, "number");
  assert.ok(cache.size > 0);
});

Deno.test("zeroing a branch's gradient stops it there and nowhere else", async () => {
  const model = await tiny();
  const zero = (g: Tensor) => ({ data: new Float32Array(g.data.length), shape: g.shape });
  const { cache } = await model.runWithCache(tokens, { returnType: "loss", inclBwdCache: true });
  const hooked: Record<string, Float32Array> = {};
  await model.runWithHooks(tokens, {
    returnType: "loss",
    bwdHooks: [
      ["blocks.1.hook_attn_out", zero],
      [(n) => n.startsWith("blocks.1.") || n.startsWith("blocks.0.hook_resid_post"), (g, h) => {
        hooked[h.name] = g.data.slice();
      }],
    ],
  });
  // The attention branch of block 1 receives nothing ...
  assert.ok(hooked["blocks.1.attn.hook_z"].every((v) => v === 0), "z");
  assert.ok(hooked["blocks.1.attn.hook_q"].every((v) => v === 0), "q");
  // ... the residual path is untouched, so resid_pre of block 1 gets exactly resid_mid's.
  bitsEqual(hooked["blocks.1.hook_resid_pre"], hooked["blocks.1.hook_resid_mid"], "resid");
  bitsEqual(
    hooked["blocks.1.hook_resid_mid"],
    cache.get("blocks.1.hook_resid_mid_grad").data,
    "mid",
  );
  bitsEqual(hooked["blocks.0.hook_resid_post"], hooked["blocks.1.hook_resid_pre"], "post");
});

Deno.test("a replaced hook_scale gradient flows on", async () => {
  const model = await tiny();
  const name = "blocks.1.ln2.hook_scale";
  const plain = await lossGrads(model);
  const { cache } = await model.runWithCache(tokens, {
    returnType: "loss",
    inclBwdCache: true,
    namesFilter: [name, "blocks.1.hook_resid_mid"],
  });
  assert.deepEqual(cache.keys(), [
    "blocks.1.hook_resid_mid",
    name,
    `${name}_grad`,
    "blocks.1.hook_resid_mid_grad",
  ]);
  // reading the scale's gradient changes nothing
  bitsEqual(
    cache.get("blocks.1.hook_resid_mid_grad").data,
    plain.get("blocks.1.hook_resid_mid_grad").data,
    "cached scale",
  );
  let mid: Float32Array | undefined;
  await model.runWithHooks(tokens, {
    returnType: "loss",
    bwdHooks: [
      [name, (g) => void g.data.fill(0)],
      ["blocks.1.hook_resid_mid", (g) => void (mid = g.data.slice())],
    ],
  });
  assert.ok(maxRel(mid!, plain.get("blocks.1.hook_resid_mid_grad").data) > 1e-4, "changed");
});

Deno.test("a forward patch stops the gradient at the patched elements only", async () => {
  const model = await tiny();
  const d = model.cfg.dModel, T = tokens[0].length;
  const grads: Record<string, Float32Array> = {};
  await model.runWithHooks(tokens, {
    returnType: "loss",
    fwdHooks: [["blocks.0.hook_mlp_out", (a) => void a.data.fill(0, 3 * d, 4 * d)]],
    bwdHooks: [[(n) => n.startsWith("blocks.0.mlp."), (g, h) => void (grads[h.name] = g.data)]],
  });
  const post = grads["blocks.0.mlp.hook_post"], dMlp = model.cfg.dMlp;
  for (let b = 0; b < 2; b++) {
    for (let t = 0; t < T; t++) {
      const row = post.subarray((b * T + t) * dMlp, (b * T + t + 1) * dMlp);
      const zero = row.every((v) => v === 0);
      // (the last position's logits are not in the loss: no gradient reaches it either way)
      assert.equal(zero, (b === 0 && t === 3) || t === T - 1, `mlp_post gradient at (${b}, ${t})`);
    }
  }
});

Deno.test("chunked and full-logit metrics agree (loss, log-prob, a metric of one's own)", async () => {
  const model = await tiny();
  const chunked = await model.runWithCache(tokens, { returnType: "loss", inclBwdCache: true });
  const full = await model.runWithCache(tokens, { returnType: "both", inclBwdCache: true });
  assert.ok(Math.abs(chunked.loss! - full.loss!) < 1e-6 * chunked.loss!);
  assert.equal(full.logits!.shape.join(), [2, 12, model.cfg.dVocab].join());
  for (const name of ["hook_embed", "blocks.0.attn.hook_pattern", "blocks.1.mlp.hook_pre"]) {
    const err = maxRel(chunked.cache.get(`${name}_grad`).data, full.cache.get(`${name}_grad`).data);
    assert.ok(err < 1e-5, `${name}: ${err}`);
  }
  // logProbMetric(targets) = minus the loss at one position; a hand-written logit diff.
  const targets = tokens.map((row) => row[6]);
  const lp = await model.runWithCache(tokens, {
    metric: logProbMetric(targets, { position: 5 }),
    inclBwdCache: true,
    returnType: "none",
  });
  const lpFull = await model.runWithCache(tokens, {
    metric: {
      value: logProbMetric(targets, { position: 5 }).value,
      grad: logProbMetric(targets, { position: 5 }).grad,
    },
    inclBwdCache: true,
    returnType: "none",
  });
  assert.ok(Math.abs(lp.value! - lpFull.value!) < 1e-5);
  const err = maxRel(
    lp.cache.get("hook_embed_grad").data,
    lpFull.cache.get("hook_embed_grad").data,
  );
  assert.ok(err < 1e-5, `logProb: ${err}`);
  // the loss from t = 5 on, with the run's tokens or given ones
  const from5 = await model.runWithCache(tokens, {
    metric: lossMetric({ from: 5 }),
    inclBwdCache: true,
    returnType: "logits",
  });
  const again = lossMetric({
    from: 5,
    tokens: { data: Int32Array.from(tokens.flat()), shape: [2, 12] },
  })
    .value(from5.logits!);
  assert.ok(Math.abs(from5.value! - again) < 1e-5);
});

Deno.test("namesFilter limits activations and gradients alike", async () => {
  const model = await tiny();
  const { cache } = await model.runWithCache(tokens, {
    returnType: "loss",
    inclBwdCache: true,
    namesFilter: (n) => n.endsWith("hook_z"),
  });
  assert.deepEqual(cache.keys(), [
    "blocks.0.attn.hook_z",
    "blocks.1.attn.hook_z",
    "blocks.1.attn.hook_z_grad",
    "blocks.0.attn.hook_z_grad",
  ]);
});

Deno.test("gradients are bit-identical on 1 and 2 threads", async () => {
  const { config, weights } = syntheticGpt2({
    nLayers: 2,
    nHeads: 4,
    dModel: 128,
    dVocab: 1000,
    nCtx: 64,
    seed: 5,
    std: 0.1,
  });
  const toks = Array.from(
    { length: 3 },
    (_, b) => Array.from({ length: 48 }, (_, t) => (b * 97 + t * 31) % 1000),
  );
  const run = async (threads: number) => {
    const model = await HookedTransformer.fromBytes(config, weights, { threads });
    assert.equal(model.backend.threads, threads);
    const r = await model.runWithCache(toks, { returnType: "loss", inclBwdCache: true });
    model.dispose();
    return r;
  };
  const one = await run(1), two = await run(2);
  assert.equal(one.loss, two.loss);
  for (const name of one.cache.keys()) {
    bitsEqual(two.cache.get(name).data, one.cache.get(name).data, name);
  }
});

Deno.test("a NaN metric or a hook of the wrong shape is a typed error, and the model keeps working", async () => {
  const model = await tiny();
  const before = await lossGrads(model);
  const inUse = (model.backend as WasmBackend).bytesInUse;
  const nan: Metric = {
    value: () => NaN,
    grad: (l) => ({ data: new Float32Array(l.data.length), shape: l.shape }),
  };
  await assert.rejects(
    model.runWithCache(tokens, { metric: nan, inclBwdCache: true }),
    (e) => e instanceof InputError && /NaN/.test(e.message),
  );
  const badGrad: Metric = {
    value: () => 1,
    grad: () => ({ data: new Float32Array(3), shape: [3] }),
  };
  await assert.rejects(
    model.runWithCache(tokens, { metric: badGrad, inclBwdCache: true }),
    (e) => e instanceof InputError && /shape/.test(e.message),
  );
  await assert.rejects(
    model.runWithHooks(tokens, {
      returnType: "loss",
      bwdHooks: [["blocks.0.hook_mlp_out", () => ({ data: new Float32Array(2), shape: [2] })]],
    }),
    (e) => e instanceof HookError && /backward hook/.test(e.message) && /shape/.test(e.message),
  );
  await assert.rejects(
    model.runWithHooks(tokens, { bwdHooks: [["blocks.0.hook_mlp_out", () => {}]] }),
    (e) => e instanceof InputError && /returnType: "loss"/.test(e.message),
  );
  await assert.rejects(
    model.runWithHooks(tokens, {
      returnType: "loss",
      bwdHooks: [["blocks.0.hook_mlp_outt", () => {}]],
    }),
    (e) => e instanceof HookError && /did you mean/.test(e.message),
  );
  await assert.rejects(
    model.runWithCache(tokens, { metric: logitDiffMetric([1], [2]), inclBwdCache: true }),
    (e) => e instanceof InputError && /1 token ids for a batch of 2/.test(e.message),
  );
  await assert.rejects(
    model.runWithCache(tokens, { metric: lossMetric() }),
    (e) => e instanceof InputError && /inclBwdCache/.test(e.message),
  );
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    model.runWithCache(tokens, { metric: { value: 1 } as any, inclBwdCache: true }),
    (e) => e instanceof InputError && /value\(logits\)/.test(e.message),
  );
  assert.equal((model.backend as WasmBackend).bytesInUse, inUse, "memory released");
  const after = await lossGrads(model);
  for (const name of before.keys()) bitsEqual(after.get(name).data, before.get(name).data, name);
});

// A padded batch's gradients are each sequence's own: at real positions, B times the gradients of
// the sequence run alone (the logit-difference metric averages over the batch). Left padding moves
// a sequence's positions (and rotary angles) and masks the pads as keys; the backward follows.
for (const which of ["tiny-hf-f32", "tiny-llama"]) {
  Deno.test(`${which}: gradients of a left-padded batch equal the separate runs'`, async () => {
    const dir = repoFixturePath(which);
    const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    const model = await HookedTransformer.fromBytes(
      config,
      await Deno.readFile(`${dir}/model.safetensors`),
      { threads: 1 },
    );
    try {
      const a = [7, 3, 17, 42, 8, 3, 17], b = [5, 9, 13, 2, 60, 61, 5, 9, 13, 2, 60];
      const T = b.length, pad = T - a.length;
      const padded = [[...Array(pad).fill(0), ...a], b];
      const attentionMask = [[...Array(pad).fill(0), ...a.map(() => 1)], b.map(() => 1)];
      const names = [
        "hook_embed",
        "blocks.0.hook_resid_pre",
        "blocks.0.attn.hook_q",
        "blocks.1.attn.hook_pattern",
        "blocks.1.mlp.hook_post",
        "ln_final.hook_normalized",
      ];
      const ans = [11, 12], wrong = [20, 21];
      const batch = await model.runWithCache(padded, {
        attentionMask,
        metric: logitDiffMetric(ans, wrong),
        inclBwdCache: true,
        returnType: "none",
        namesFilter: names,
      });
      for (const [s, seq] of [a, b].entries()) {
        const alone = await model.runWithCache([seq], {
          metric: logitDiffMetric([ans[s]], [wrong[s]]),
          inclBwdCache: true,
          returnType: "none",
          namesFilter: names,
        });
        const first = T - seq.length;
        for (const name of names) {
          const g = batch.cache.get(`${name}_grad`), one = alone.cache.get(`${name}_grad`);
          const per = g.data.length / (2 * T); // floats per position (pattern: per query row)
          const rows = g.data.subarray((s * T + first) * per, (s + 1) * T * per);
          let got: Float32Array;
          if (name.endsWith("hook_pattern")) {
            // [head, query, key]: the real queries' rows, at the real keys.
            const H = g.shape[1];
            const block = g.data.subarray(s * H * T * T, (s + 1) * H * T * T);
            got = new Float32Array(one.data.length);
            const n = seq.length;
            for (let h = 0; h < H; h++) {
              for (let q = 0; q < n; q++) {
                got.set(
                  block.subarray((h * T + first + q) * T + first, (h * T + first + q) * T + T),
                  (h * n + q) * n,
                );
              }
            }
          } else {
            got = rows;
          }
          const doubled = got.map((v) => 2 * v);
          assert.ok(maxRel(doubled, one.data) < 1e-5, `${name}_grad of sequence ${s}`);
        }
      }
      // The loss of a padded batch counts real predictions only, as the forward's loss does.
      const { loss } = await model.runWithCache(padded, {
        attentionMask,
        returnType: "loss",
        inclBwdCache: true,
        namesFilter: [],
      });
      const forwardLoss = await model.run(padded, { attentionMask, returnType: "loss" });
      assert.ok(Math.abs(loss! - forwardLoss) < 1e-6 * forwardLoss, `${loss} vs ${forwardLoss}`);
    } finally {
      model.dispose();
    }
  });
}
