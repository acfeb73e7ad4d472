/**
 * SAEs spliced with hooks (SAELens's HookedSAETransformer): the SAE's hook points can be hooked
 * (feature ablation, steering) and predicates reach them; the error term is computed with the
 * SAE's hooks off, so an ablation still changes the output; SAEs persist across runs until
 * `resetSaes`, `saes(...)` restores what was there; steering applies during `generate`; the
 * top-activating contexts and density agree with a brute-force pass over every text.
 */
import assert from "node:assert/strict";
import { HookedTransformer, HookError, SAE, steerFeature, topActivatingContexts } from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { fixturePath } from "./fixtures.ts";

const dir = fixturePath("tiny-hf-f32");
const model = await HookedTransformer.fromBytes(
  JSON.parse(await Deno.readTextFile(`${dir}/config.json`)),
  await Deno.readFile(`${dir}/model.safetensors`),
  { threads: 1 },
);
const opts = { backend: model.backend };
const sae = await SAE.loadFromDisk(fixturePath("sae/standard"), opts);
const H = sae.cfg.hookName;
// deno-lint-ignore no-explicit-any
const G: any = JSON.parse(Deno.readTextFileSync(fixturePath("sae/sae-golden.json")));
const tokens: number[][] = G.tokens;

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

Deno.test("an ablated feature leaves its decoder row's worth of error in the output", async () => {
  const f = G.saes.standard.feature_acts.flat(2).findIndex((v: number) => v > 0) % 64;
  const names = [`${H}.hook_sae_acts_post`, `${H}.hook_sae_output`, H];
  const clean = await model.runWithCacheWithSaes(tokens, {
    saes: [sae],
    useErrorTerm: true,
    namesFilter: names,
  });
  const acts = clean.cache.get(`${H}.hook_sae_acts_post`);
  const ablated = await model.saes([sae], async (m) => {
    m.addHook(`${H}.hook_sae_acts_post`, steerFeature(f, 0, { mode: "set" }));
    try {
      return await m.runWithCache(tokens, { namesFilter: names });
    } finally {
      m.resetHooks();
    }
  }, { useErrorTerm: true });
  const x = clean.cache.get(`${H}.hook_sae_output`).data; // = the clean activation
  const y = ablated.cache.get(`${H}.hook_sae_output`).data;
  const d = sae.cfg.dIn;
  let worst = 0;
  for (let r = 0; r < x.length / d; r++) {
    const a = acts.data[r * 64 + f];
    for (let j = 0; j < d; j++) {
      worst = Math.max(
        worst,
        Math.abs(y[r * d + j] - (x[r * d + j] - a * sae.W_dec.data[f * d + j])),
      );
    }
  }
  assert.ok(worst < 1e-5, `ablated output off by ${worst}`);
  assert.ok(
    maxDiff(clean.logits!.data, ablated.logits!.data) > 1e-4,
    "the ablation changed nothing",
  );
});

Deno.test("SAEs stay until resetSaes; saes() restores; resetHooks keeps them; names include theirs", async () => {
  const other = await SAE.loadFromDisk(fixturePath("sae/jumprelu"), opts);
  const clean = await model.run(tokens);
  model.addSae(sae);
  assert.ok(model.hookNames.includes(`${H}.hook_sae_acts_post`));
  const spliced = await model.run(tokens);
  assert.ok(maxDiff(spliced.data, clean.data) > 1e-4);
  model.resetHooks();
  assert.deepEqual((await model.run(tokens)).data, spliced.data);
  const both = await model.saes([other], (m) => m.run(tokens));
  assert.ok(maxDiff(both.data, spliced.data) > 1e-6);
  assert.deepEqual([...model.actsToSaes.keys()], [H]);
  assert.deepEqual((await model.run(tokens)).data, spliced.data);
  // a predicate reaches the nested points
  const seen: string[] = [];
  await model.runWithHooks(tokens, {
    fwdHooks: [[
      (n: string) => n.includes("hook_sae_"),
      (_t: Tensor, ctx) => void seen.push(ctx.name),
    ]],
  });
  assert.deepEqual(seen, [
    `${H}.hook_sae_input`,
    `${H}.hook_sae_acts_pre`,
    `${H}.hook_sae_acts_post`,
    `${H}.hook_sae_recons`,
    `${H}.hook_sae_output`,
  ]);
  model.resetSaes();
  assert.ok(!model.hookNames.includes(`${H}.hook_sae_acts_post`));
  assert.deepEqual((await model.run(tokens)).data, clean.data);
});

Deno.test("steering by a feature during generate; with the error term alone, the clean tokens", async () => {
  const prompt = [tokens[0].slice(0, 6)];
  const gen = { maxNewTokens: 5, temperature: 0 };
  const clean = await model.generate(prompt, gen);
  const errorOnly = await model.saes([sae], (m) => m.generate(prompt, gen), { useErrorTerm: true });
  assert.deepEqual(errorOnly, clean);
  const steered = await model.saes([sae], async (m) =>
    await m.hooks(
      [[`${H}.hook_sae_acts_post`, steerFeature(3, 200)]],
      (mm) => mm.generate(prompt, gen),
    ), { useErrorTerm: true });
  assert.notDeepEqual(steered, clean);
});

Deno.test("top-activating contexts and density match a brute-force pass", async () => {
  const rng = (i: number) => (i * 2654435761) >>> 0;
  const texts = Array.from(
    { length: 11 },
    (_, t) => Array.from({ length: 6 + (t % 3) }, (_, p) => rng(t * 31 + p) % model.cfg.dVocab),
  );
  const done: number[] = [];
  const r = await topActivatingContexts(model, sae, texts, {
    k: 3,
    batchSize: 4,
    progress: false,
    onProgress: (n) => done.push(n),
  });
  assert.equal(done.at(-1), texts.length);
  // brute force: each text alone
  const all: { f: number; text: number; pos: number; a: number }[] = [];
  let positions = 0;
  const active = new Float64Array(64);
  for (const [t, toks] of texts.entries()) {
    const { cache } = await model.runWithCacheWithSaes([toks], {
      saes: [sae],
      useErrorTerm: true,
      namesFilter: [`${H}.hook_sae_acts_post`],
    });
    const a = cache.get(`${H}.hook_sae_acts_post`).data;
    for (let p = 0; p < toks.length; p++) {
      for (let f = 0; f < 64; f++) {
        if (a[p * 64 + f] > 0) {
          all.push({ f, text: t, pos: p, a: a[p * 64 + f] });
          active[f]++;
        }
      }
    }
    positions += toks.length;
  }
  assert.equal(r.positions, positions);
  for (let f = 0; f < 64; f++) {
    assert.ok(Math.abs(r.density[f] - active[f] / positions) < 1e-12);
    const want = all.filter((e) => e.f === f).sort((x, y) => y.a - x.a).slice(0, 3);
    assert.deepEqual(
      r.top[f].map((c) => [c.text, c.position]),
      want.map((e) => [e.text, e.pos]),
      `feature ${f}`,
    );
    r.top[f].forEach((c, i) =>
      assert.ok(Math.abs(c.activation - want[i].a) <= 1e-5 * Math.abs(want[i].a))
    );
  }
});

Deno.test("an SAE of another width, or an async user hook on its points, is refused", async () => {
  // d_in 16 divides the model's width 32: without the check its rows would be read wrongly
  const d = 16, n = 8;
  const narrow = await SAE.fromTensors(
    { d_in: d, d_sae: n, hook_name: H, architecture: "standard" },
    {
      W_enc: { data: new Float32Array(d * n).fill(0.1), shape: [d, n] },
      W_dec: { data: new Float32Array(n * d).fill(0.1), shape: [n, d] },
      b_enc: { data: new Float32Array(n), shape: [n] },
      b_dec: { data: new Float32Array(d), shape: [d] },
    },
    opts,
  );
  await assert.rejects(
    () => model.runWithSaes(tokens, { saes: [narrow] }),
    HookError,
    "reads 16 values per position",
  );
  // user hooks stay synchronous, nested points included
  const asyncHook = (async () => {}) as unknown as () => void;
  await assert.rejects(
    () =>
      model.runWithHooksWithSaes(tokens, {
        saes: [sae],
        fwdHooks: [[`${H}.hook_sae_acts_post`, asyncHook]],
      }),
    HookError,
    "synchronous",
  );
  // the model is still usable after both
  const spliced = await model.runWithSaes(tokens, {
    saes: [sae],
    useErrorTerm: true,
    returnType: "logits",
  });
  const clean = await model.run(tokens, { returnType: "logits" });
  assert.deepEqual(spliced.data, clean.data);
});
