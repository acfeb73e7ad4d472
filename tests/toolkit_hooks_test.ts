/**
 * Hooks as TransformerLens users use them (issue 10): the optional hook points against
 * `tiny-tl-golden.json` and their patching semantics, TL's score/pattern hook semantics, hooks
 * registered on the model (`addHook`, `resetHooks`, `hooks`), `runWithCache` with `fwdHooks`,
 * short names and negative layers, and the errors.
 *
 * Tolerance 1e-5 relative to the activation's scale, as in toolkit_forward_test.ts (measured
 * errors are below 5e-7).
 */
import assert from "node:assert/strict";
import {
  getActName,
  HookError,
  type HookFn,
  InputError,
  nextTokenLogProbs,
  patchedNextTokenLogProbs,
  type Tensor,
} from "../mod.ts";
import { hookRegistryOf } from "../model/hooked_transformer.ts";
import { fixturePath } from "./fixtures.ts";
import { relErr, tinyModel } from "./toolkit_helpers.ts";

const golden = JSON.parse(Deno.readTextFileSync(fixturePath("tiny-tl-golden.json")));
const tokens: number[][] = golden.tokens;

const SETTERS = {
  use_attn_result: "setUseAttnResult",
  use_split_qkv_input: "setUseSplitQkvInput",
  use_attn_in: "setUseAttnIn",
  use_hook_mlp_in: "setUseHookMlpIn",
} as const;

for (const kind of ["processed", "unprocessed"] as const) {
  Deno.test(`optional hook points match TransformerLens (${kind})`, async () => {
    const model = await tinyModel(kind === "processed");
    const plain = await model.run(tokens);
    for (const [option, setter] of Object.entries(SETTERS)) {
      const acts: Record<string, unknown[]> = golden.loss_grads[kind][option].acts;
      const names = Object.keys(acts);
      for (const name of names) assert.ok(!model.hookNames.includes(name), `${name} is off`);
      model[setter](true);
      for (const name of names) assert.ok(model.hookNames.includes(name), `${name} is on`);
      const { cache, logits } = await model.runWithCache(tokens, { namesFilter: names });
      for (const name of names) {
        const ref = acts[name].flat(4) as number[];
        const act = cache.get(name);
        const want = option === "use_hook_mlp_in" ? [2, 12, 32] : [2, 12, 4, 32];
        assert.deepEqual(act.shape, want, name);
        const err = relErr(act.data, ref);
        assert.ok(err < 1e-5, `${option} ${name}: ${err}`);
      }
      // Computing through the per-head path changes nothing but rounding.
      assert.ok(relErr(logits.data, plain.data) < 1e-5, `${option}: logits`);
      model[setter](false);
      assert.ok(!model.hookNames.includes(names[0]));
    }
  });
}

Deno.test("a hook name of an option that is off says how to turn it on", async () => {
  const model = await tinyModel();
  const noop: HookFn = () => {};
  const cases = [
    ["blocks.0.attn.hook_result", "setUseAttnResult(true)"],
    ["blocks.1.hook_q_input", "setUseSplitQkvInput(true)"],
    ["blocks.0.hook_attn_in", "setUseAttnIn(true)"],
    ["blocks.1.hook_mlp_in", "setUseHookMlpIn(true)"],
  ];
  for (const [name, setter] of cases) {
    await assert.rejects(
      () => model.runWithHooks(tokens, { fwdHooks: [[name, noop]] }),
      HookError,
      `enable it with ${setter}`,
    );
    await assert.rejects(
      () => model.runWithCache(tokens, { namesFilter: [name] }),
      HookError,
      setter,
    );
    assert.throws(() => model.addHook(name, noop), HookError, setter);
  }
  // deno-lint-ignore no-explicit-any
  assert.throws(() => (model as any).setUseAttnResult("yes"), InputError, "true or false");
});

Deno.test("hook_result: patching one head's result equals patching its z", async () => {
  const model = await tinyModel();
  model.setUseAttnResult(true);
  const head = 2, dHead = 8, d = 32;
  const viaZ = await model.runWithHooks(tokens, {
    fwdHooks: [["blocks.0.attn.hook_z", (z) => {
      for (let r = 0; r < 24; r++) {
        z.data.fill(0, (r * 4 + head) * dHead, (r * 4 + head + 1) * dHead);
      }
    }]],
  });
  const viaResult = await model.runWithHooks(tokens, {
    fwdHooks: [["blocks.0.attn.hook_result", (res) => {
      for (let r = 0; r < 24; r++) res.data.fill(0, (r * 4 + head) * d, (r * 4 + head + 1) * d);
    }]],
  });
  const plain = await model.run(tokens);
  assert.ok(relErr(viaResult.data, viaZ.data) < 1e-5, "result ablation = z ablation");
  assert.ok(relErr(viaResult.data, plain.data) > 1e-3, "the ablation changes the logits");
  // attn_out is the sum of the heads' results plus b_O.
  const { cache } = await model.runWithCache(tokens, {
    namesFilter: ["blocks.1.attn.hook_result", "blocks.1.hook_attn_out"],
  });
  const res = cache.get("result", 1).data, out = cache.get("attn_out", 1).data;
  const bO = model.b_O.data.subarray(d, 2 * d);
  const sum = Float32Array.from(out, (_, i) => {
    const r = Math.floor(i / d), j = i % d;
    let s = bO[j];
    for (let h = 0; h < 4; h++) s += res[(r * 4 + h) * d + j];
    return s;
  });
  assert.ok(relErr(out, sum) < 1e-6);
});

Deno.test("hook_v_input: a patch of one head's input moves only that head's values", async () => {
  const model = await tinyModel();
  model.setUseSplitQkvInput(true);
  const names = ["blocks.1.attn.hook_v", "blocks.1.attn.hook_k", "blocks.1.ln1.hook_normalized"];
  const clean = await model.runWithCache(tokens, { namesFilter: names });
  const patched = await model.runWithCache(tokens, {
    namesFilter: names,
    fwdHooks: [["blocks.1.hook_v_input", (x) => {
      for (let r = 0; r < 24; r++) {
        for (let j = 0; j < 32; j++) x.data[(r * 4 + 3) * 32 + j] *= -1 + (j % 3);
      }
    }]],
  });
  const [v0, v1] = [clean.cache.get("v", 1), patched.cache.get("v", 1)];
  for (let r = 0; r < 24; r++) {
    for (let h = 0; h < 4; h++) {
      const a = v0.data.subarray((r * 4 + h) * 8, (r * 4 + h + 1) * 8);
      const b = v1.data.subarray((r * 4 + h) * 8, (r * 4 + h + 1) * 8);
      if (h === 3) assert.ok(relErr(b, a) > 1e-3, `head 3 row ${r} moved`);
      else assert.deepEqual(b, a, `head ${h} row ${r} untouched`);
    }
  }
  assert.deepEqual(patched.cache.get("k", 1).data, clean.cache.get("k", 1).data);
  // ln1's hook points carry a head axis; the cache holds the last call's (v's).
  assert.deepEqual(clean.cache.get("normalized", 1, "ln1").shape, [2, 12, 4, 32]);
  // The hook points of ln1 fire once each for q, k and v.
  const seen: number[][] = [];
  await model.runWithHooks(tokens, {
    fwdHooks: [["blocks.0.ln1.hook_scale", (s) => void seen.push(s.shape)]],
  });
  assert.deepEqual(seen, [[2, 12, 4, 1], [2, 12, 4, 1], [2, 12, 4, 1]]);
});

Deno.test("hook_mlp_in: a patch reaches the MLP but not the residual stream", async () => {
  const model = await tinyModel();
  model.setUseHookMlpIn(true);
  const names = [
    "blocks.0.hook_resid_mid",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
  ];
  const clean = await model.runWithCache(tokens, { namesFilter: names });
  const patched = await model.runWithCache(tokens, {
    namesFilter: names,
    fwdHooks: [["blocks.0.hook_mlp_in", (x) => void x.data.fill(0.25)]],
  });
  const c = clean.cache, p = patched.cache;
  assert.deepEqual(p.get("resid_mid", 0).data, c.get("resid_mid", 0).data);
  assert.ok(relErr(p.get("mlp_out", 0).data, c.get("mlp_out", 0).data) > 1e-3);
  const mid = p.get("resid_mid", 0).data, out = p.get("mlp_out", 0).data;
  const post = p.get("resid_post", 0).data;
  assert.ok(relErr(post, Float32Array.from(mid, (v, i) => v + out[i])) < 1e-6);
});

Deno.test("hook_attn_scores sees -inf above the diagonal; what it returns is used as is", async () => {
  const model = await tinyModel();
  let sawMask = false;
  const { cache } = await model.runWithCache(tokens, {
    namesFilter: ["blocks.0.attn.hook_pattern"],
    fwdHooks: [["blocks.0.attn.hook_attn_scores", (s) => {
      // [batch, head, query, key]: query 0 may not see key 1.
      sawMask = s.data[1] === -Infinity && Number.isFinite(s.data[0]);
      s.data.fill(0); // unmask everything: uniform attention over all 12 keys
    }]],
  });
  assert.ok(sawMask, "the hook saw the causal mask");
  assert.ok(cache.get("pattern", 0).data.every((v) => Math.abs(v - 1 / 12) < 1e-7));
});

Deno.test("hook_pattern edits above the diagonal are used for z", async () => {
  const model = await tinyModel();
  const { cache } = await model.runWithCache(tokens, {
    namesFilter: ["blocks.0.attn.hook_z", "blocks.0.attn.hook_v"],
    fwdHooks: [["blocks.0.attn.hook_pattern", (p) => {
      // Every query attends only to the last key (the future, for all but the last query).
      p.data.fill(0);
      for (let row = 0; row < p.data.length / 12; row++) p.data[row * 12 + 11] = 1;
    }]],
  });
  const z = cache.get("z", 0).data, v = cache.get("v", 0).data;
  for (let b = 0; b < 2; b++) {
    for (let i = 0; i < 12; i++) {
      const zi = z.subarray((b * 12 + i) * 32, (b * 12 + i + 1) * 32);
      const vLast = v.subarray((b * 12 + 11) * 32, (b * 12 + 12) * 32);
      assert.deepEqual(zi, vLast, `z[${b}, ${i}] = v[${b}, 11]`);
    }
  }
});

Deno.test("hook_scale is read-only: an in-place edit and a replacement are the same error", async () => {
  const model = await tinyModel();
  const name = "blocks.0.ln2.hook_scale";
  for (
    const fn of [
      (s: Tensor) => void (s.data[0] = 2),
      (s: Tensor) => ({ data: s.data.map((v) => v * 2), shape: s.shape }),
    ]
  ) {
    await assert.rejects(
      () => model.runWithHooks(tokens, { fwdHooks: [[name, fn]] }),
      HookError,
      "read-only: the normalization has already divided by this scale",
    );
  }
  await model.runWithHooks(tokens, { fwdHooks: [[name, (s) => void s.data[0]]] }); // reading is fine
});

Deno.test("addHook, resetHooks and hooks() keep hooks on the model as TL does", async () => {
  const model = await tinyModel();
  const plain = await model.run(tokens);
  const calls: string[] = [];
  const zero: HookFn = (a) => void a.data.fill(0);
  model.addHook("blocks.1.hook_mlp_out", zero);
  model.addHook((n) => n.endsWith("hook_attn_out"), (_a, ctx) => void calls.push(ctx.name), {
    isPermanent: true,
  });
  const ablated = await model.run(tokens);
  assert.ok(relErr(ablated.data, plain.data) > 1e-3, "the registered hook ran");
  assert.deepEqual(calls, ["blocks.0.hook_attn_out", "blocks.1.hook_attn_out"]);
  // A call's fwdHooks run after the registered ones; the cache sees the patched value.
  const { cache } = await model.runWithCache(tokens, {
    namesFilter: ["blocks.1.hook_mlp_out"],
    fwdHooks: [["blocks.1.hook_mlp_out", (a) => void a.data.fill(a.data[0] + 1)]],
  });
  assert.ok(cache.get("mlp_out", 1).data.every((v) => v === 1), "registered, then call's hooks");
  model.resetHooks();
  assert.deepEqual((await model.run(tokens)).data, plain.data, "the temporary hook is gone");
  assert.equal(calls.length, 6, "the permanent hook stays");
  model.resetHooks({ includingPermanent: true });
  await model.run(tokens);
  assert.equal(calls.length, 6);
  // hooks(): added for the scope, removed afterwards even when the scope throws.
  const inside = await model.hooks([["blocks.1.hook_mlp_out", zero]], (m) => m.run(tokens));
  assert.deepEqual(inside.data, ablated.data);
  await assert.rejects(
    () =>
      model.hooks([["blocks.1.hook_mlp_out", zero]], () => {
        throw new Error("boom");
      }),
    Error,
    "boom",
  );
  assert.deepEqual((await model.run(tokens)).data, plain.data);
  // The remover addHook returns; prepend puts a hook first.
  const order: number[] = [];
  model.addHook("hook_embed", () => void order.push(1));
  const remove = model.addHook("hook_embed", () => void order.push(0), { prepend: true });
  await model.run(tokens);
  assert.deepEqual(order, [0, 1]);
  remove();
  await model.run(tokens);
  assert.deepEqual(order, [0, 1, 1]);
  model.resetHooks();
});

Deno.test("backward hooks are kept in the registry for gradient passes", async () => {
  const model = await tinyModel();
  const fn: HookFn = () => {};
  model.addHook("blocks.0.hook_resid_pre", fn, { dir: "bwd" });
  await model.hooks([], () => {
    assert.equal(hookRegistryOf(model).entries("bwd").length, 2);
  }, { bwdHooks: [["blocks.1.attn.hook_z", fn]] });
  const bwd = hookRegistryOf(model).entries("bwd");
  assert.deepEqual(bwd.map((h) => h.filter), ["blocks.0.hook_resid_pre"]);
  assert.equal(hookRegistryOf(model).entries("fwd").length, 0);
  model.resetHooks({ direction: "fwd" });
  assert.equal(hookRegistryOf(model).entries("bwd").length, 1);
  model.resetHooks({ direction: "bwd" });
  assert.equal(hookRegistryOf(model).entries("bwd").length, 0);
  const untyped = model.addHook.bind(model) as (n: string, f: HookFn, o: unknown) => void;
  assert.throws(
    () => untyped("blocks.0.attn.hook_z", fn, { dir: "up" }),
    HookError,
    '"fwd" or "bwd"',
  );
  assert.throws(
    () => untyped("blocks.0.attn.hook_z", fn, { is_permanent: true }),
    InputError,
    "did you mean isPermanent?",
  );
});

Deno.test("async hooks are refused, when added and when they run", async () => {
  const model = await tinyModel();
  const asyncHook = async () => {};
  // deno-lint-ignore no-explicit-any
  const h = asyncHook as any;
  assert.throws(() => model.addHook("blocks.0.hook_z", h), HookError, "must be synchronous");
  await assert.rejects(
    () => model.runWithHooks(tokens, { fwdHooks: [["blocks.0.hook_z", h]] }),
    HookError,
    "must be synchronous",
  );
  // A plain function that returns a Promise is caught when it runs.
  const promising = () => Promise.resolve();
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    () => model.runWithHooks(tokens, { fwdHooks: [["blocks.0.hook_z", promising as any]] }),
    HookError,
    "returned a Promise",
  );
});

Deno.test("TL's short names, compact names and negative layers", async () => {
  const model = await tinyModel();
  const expected: [string, number | undefined, string | undefined, string][] = [
    ["resid_pre", 1, undefined, "blocks.1.hook_resid_pre"],
    ["attn_out", 0, undefined, "blocks.0.hook_attn_out"],
    ["pattern", 1, undefined, "blocks.1.attn.hook_pattern"],
    ["q", 0, undefined, "blocks.0.attn.hook_q"],
    ["k", 0, undefined, "blocks.0.attn.hook_k"],
    ["v", 0, undefined, "blocks.0.attn.hook_v"],
    ["z", 1, undefined, "blocks.1.attn.hook_z"],
    ["result", 1, undefined, "blocks.1.attn.hook_result"],
    ["pre", 0, undefined, "blocks.0.mlp.hook_pre"],
    ["post", 0, undefined, "blocks.0.mlp.hook_post"],
    ["mlp_pre", 1, undefined, "blocks.1.mlp.hook_pre"],
    ["mlp_post", 1, undefined, "blocks.1.mlp.hook_post"],
    ["scale", 1, "ln1", "blocks.1.ln1.hook_scale"],
    ["normalized", 0, "ln2", "blocks.0.ln2.hook_normalized"],
    ["scale", undefined, undefined, "ln_final.hook_scale"],
    ["attn_in", 0, undefined, "blocks.0.hook_attn_in"],
    ["q_input", 1, undefined, "blocks.1.hook_q_input"],
    ["mlp_in", 0, undefined, "blocks.0.hook_mlp_in"],
    ["key", 0, undefined, "blocks.0.attn.hook_k"],
    ["k6", undefined, undefined, "blocks.6.attn.hook_k"],
    ["scale4ln1", undefined, undefined, "blocks.4.ln1.hook_scale"],
    ["pre5", undefined, undefined, "blocks.5.mlp.hook_pre"],
  ];
  for (const [name, layer, type, full] of expected) {
    assert.equal(getActName(name, layer, type), full, `${name} ${layer} ${type}`);
  }
  assert.equal(model.getActName("resid_pre", -1), "blocks.1.hook_resid_pre");
  assert.equal(model.getActName("scale", -2, "ln1"), "blocks.0.ln1.hook_scale");
  assert.throws(() => model.getActName("z", -3), HookError, "outside [-2, 2)");
  assert.throws(() => getActName("z", -1), HookError, "layer count");
  const { cache } = await model.runWithCache(tokens);
  assert.deepEqual(cache.get("resid_pre", -1).data, cache.get("blocks.1.hook_resid_pre").data);
  assert.deepEqual(cache.get("k", -2).data, cache.get("k", 0).data);
});

Deno.test("nextTokenLogProbs runs registered hooks; patchedNextTokenLogProbs refuses them", async () => {
  const model = await tinyModel();
  const zero: HookFn = (a) => void a.data.fill(0);
  const plain = await nextTokenLogProbs(model, tokens);
  const ablatedRun = await model.runWithHooks(tokens, {
    fwdHooks: [["blocks.1.hook_mlp_out", zero]],
    returnType: "loss",
    lossPerToken: true,
  });
  model.addHook("blocks.1.hook_mlp_out", zero);
  const ablated = await nextTokenLogProbs(model, tokens);
  assert.ok(relErr(ablated.logProbs, plain.logProbs) > 1e-3);
  assert.ok(relErr(ablated.logProbs, ablatedRun.data.map((v) => -v)) < 1e-6);
  await assert.rejects(
    () => patchedNextTokenLogProbs(model, [tokens[0]], []),
    InputError,
    "registered hooks",
  );
  model.resetHooks();
});
