/**
 * `runWithCache` on WebAssembly keeps the activations no hook reads in the model's memory until
 * they are read (`model/resident_cache.ts`). What must hold: every activation reads back bit for
 * bit as the host copies a hook on every point receives; memory is released by `dispose` (unread
 * activations then refuse to be read, read ones stay) or, when the cache is not disposed, at the
 * model's next call, which moves the unread ones to the host first; at most one cache is held;
 * the synchronous setters that upload weights find the memory free. The golden tests check the
 * cached values against TransformerLens's; this checks the lifetime.
 */
import assert from "node:assert/strict";
import { type HookedTransformer, HookError } from "../mod.ts";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { SeededRng } from "../core/rng.ts";
import { fixtureModel } from "./toolkit_helpers.ts";

const TOKENS = [[5, 17, 3, 90, 42, 7]];

/** Bytes the model's WebAssembly memory has allocated (weights and open scopes). */
const inUse = (model: HookedTransformer) => (model.backend as WasmBackend).bytesInUse;

/** Every activation as a hook on every point sees it (copies to the host as the pass runs). */
async function hookedCopies(model: HookedTransformer): Promise<Map<string, Float32Array>> {
  const seen = new Map<string, Float32Array>();
  await model.runWithHooks(TOKENS, {
    fwdHooks: [[() => true, (act, hook) => void seen.set(hook.name, act.data.slice())]],
  });
  return seen;
}

function assertSame(
  cache: { keys(): string[]; get(name: string): { data: Float32Array } },
  ref: Map<string, Float32Array>,
) {
  assert.deepEqual(cache.keys().toSorted(), [...ref.keys()].toSorted());
  for (const name of cache.keys()) {
    assert.deepEqual(cache.get(name).data, ref.get(name), name);
  }
}

Deno.test("a held cache reads back what hooks see, bit for bit, and is released by dispose", async () => {
  const model = await fixtureModel("tiny-hf-f32");
  const ref = await hookedCopies(model);
  const base = inUse(model);
  const { cache } = await model.runWithCache(TOKENS);
  const held = inUse(model) - base;
  const floats = [...ref.values()].reduce((n, a) => n + a.length, 0);
  assert.ok(held >= floats * 4, `held ${held} bytes for ${floats} floats`);
  const pattern = cache.get("blocks.1.attn.hook_pattern");
  assert.deepEqual(pattern.data, ref.get("blocks.1.attn.hook_pattern"));
  cache.dispose();
  assert.equal(inUse(model), base);
  assert.deepEqual(pattern.data, ref.get("blocks.1.attn.hook_pattern")); // read before: kept
  assert.throws(() => cache.get("blocks.0.hook_resid_pre").data, HookError);
  cache.dispose(); // twice: nothing more
  model.dispose();
});

Deno.test("a cache kept past the next call is moved to the host whole, and memory is freed", async () => {
  const model = await fixtureModel("tiny-hf-f32");
  const ref = await hookedCopies(model);
  const base = inUse(model);
  const first = (await model.runWithCache(TOKENS)).cache;
  const second = (await model.runWithCache(TOKENS)).cache; // its turn moves `first` out
  const one = inUse(model) - base;
  await model.run(TOKENS); // and this one `second`
  assert.equal(inUse(model), base);
  assert.ok(one > 0);
  assertSame(first, ref);
  assertSame(second, ref);
  second.dispose(); // already on the host: nothing is lost
  assertSame(second, ref);
  model.dispose();
});

Deno.test("setters that upload weights after a cached run find the memory free", async () => {
  const model = await fixtureModel("tiny-hf-f32");
  const ref = await hookedCopies(model);
  const { cache } = await model.runWithCache(TOKENS);
  model.setUseAttnResult(true); // uploads each head's W_O: no scope may be open
  model.setUseSplitQkvInput(true);
  assertSame(cache, ref);
  const { cache: withResult } = await model.runWithCache(TOKENS);
  assert.ok(withResult.keys().includes("blocks.0.attn.hook_result"));
  withResult.dispose();
  model.dispose();
});

Deno.test("removeBatchDim and concurrent cached runs read the held activations right", async () => {
  const model = await fixtureModel("tiny-hf-f32");
  const ref = await hookedCopies(model);
  const [a, b] = await Promise.all([
    model.runWithCache(TOKENS, { removeBatchDim: true }),
    model.runWithCache(TOKENS),
  ]);
  const resid = a.cache.get("blocks.0.hook_resid_post");
  assert.deepEqual(resid.shape, [TOKENS[0].length, 32]);
  assert.deepEqual(resid.data, ref.get("blocks.0.hook_resid_post"));
  assertSame(b.cache, ref);
  b.cache.dispose();
  model.dispose();
});

Deno.test("a cached run that fails releases what it held", async () => {
  const model = await fixtureModel("tiny-hf-f32");
  const base = inUse(model);
  await assert.rejects(
    model.runWithCache(TOKENS, {
      fwdHooks: [["blocks.1.hook_mlp_out", () => {
        throw new Error("a hook failed");
      }]],
    }),
    /a hook failed/,
  );
  assert.equal(inUse(model), base);
  await assert.rejects( // refused after the pass: removeBatchDim needs a batch of 1
    model.runWithCache([TOKENS[0], TOKENS[0]], { removeBatchDim: true }),
    /removeBatchDim needs a batch of 1/,
  );
  assert.equal(inUse(model), base);
  model.dispose();
});

Deno.test("copyRows, the pass's copy into held memory, splits rows over two threads exactly", async () => {
  using backend = await WasmBackend.load({ threads: 2 });
  assert.equal(backend.threads, 2);
  const rows = 4096, cols = 67, stride = 131; // 274k floats: past the threshold for threads
  const rng = new SeededRng(3);
  const values = Float32Array.from({ length: (rows - 1) * stride + cols }, () => rng.normal());
  using scope = backend.scope();
  const src = scope.upload(values), dst = scope.alloc(rows * cols);
  backend.copyRows(src, rows, cols, stride, dst);
  const want = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    want.set(values.subarray(r * stride, r * stride + cols), r * cols);
  }
  assert.deepEqual(await backend.read(dst), want);
});
