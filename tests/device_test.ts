/**
 * The `device` option end to end: which backend `fromPretrained` / `fromBytes` load, `cfg.device`,
 * `model.to(device)` (weights and per-head matrices moved, the model usable on either side),
 * generation with its key/value cache on WebGPU against WebAssembly, and the typed errors (an
 * unknown device, no hardware adapter, a buffer past the adapter's limit, a lost device).
 *
 * Gemma's backward on WebGPU (softcaps, sliding windows, q/k norms) is checked against the
 * WebAssembly backend's, itself checked against central differences in gradients_gemma_test.ts.
 *
 * Tolerance of WebGPU against WebAssembly logits: 1e-5 of the largest logit (the bound
 * for GPT-2 small; on this 2-layer width-32 model the float32 summation orders differ by ~1e-7).
 */
import assert from "node:assert/strict";
import {
  deviceOf,
  GpuDeviceLostError,
  GpuOutOfMemoryError,
  GpuUnavailableError,
  InputError,
} from "../mod.ts";
import { GpuDevice } from "../backend/webgpu/device.ts";
import { WebGpuBackend } from "../backend/webgpu/webgpu_backend.ts";
import { deviceTest, TEST_DEVICES } from "./backend_harness.ts";
import { tinyModel } from "./toolkit_helpers.ts";
import { fixturePath } from "./fixtures.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { GEMMA_FIXTURES, loadGemma } from "./gemma_fixtures.ts";

const TOKENS = [[95, 3, 17, 42, 8, 3, 17, 42, 8, 3], [95, 60, 61, 62, 60, 61, 62, 60, 61, 62]];
const webgpu = TEST_DEVICES.find((d) => d.device === "webgpu")!;

/** max |a - b| / max |b| (equal values, -Infinity masked scores included, differ by 0). */
function relDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0, top = 0;
  for (let i = 0; i < a.length; i++) {
    if (Object.is(a[i], b[i])) continue;
    d = Math.max(d, Math.abs(a[i] - b[i]));
    if (Number.isFinite(b[i])) top = Math.max(top, Math.abs(b[i]));
  }
  return d === 0 ? 0 : d / top;
}

Deno.test("device: wasm is the default; unknown devices and backend + device are InputErrors", async () => {
  const model = await tinyModel();
  try {
    assert.equal(model.cfg.device, "wasm");
    assert.equal(deviceOf(model.backend), "wasm");
    const dir = fixturePath("tiny-hf-f32");
    const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    const bytes = await Deno.readFile(`${dir}/model.safetensors`);
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      () => HookedTransformer.fromBytes(config, bytes, { device: "cuda" as any }),
      (e) => e instanceof InputError && /unknown device "cuda"/.test(e.message),
    );
    await assert.rejects(
      () => HookedTransformer.fromBytes(config, bytes, { device: "wasm", backend: model.backend }),
      InputError,
    );
    // deno-lint-ignore no-explicit-any
    await assert.rejects(() => model.to("tpu" as any), InputError);
    assert.equal(model.cfg.device, "wasm");
  } finally {
    model.dispose();
  }
});

Deno.test(deviceTest(webgpu, "device: auto takes a hardware adapter only", async () => {
  const model = await tinyModel(true, undefined, "auto");
  try {
    const adapter = await navigator.gpu.requestAdapter();
    const software = (adapter!.info as GPUAdapterInfo & { isFallbackAdapter?: boolean })
      .isFallbackAdapter;
    assert.equal(model.cfg.device, software ? "wasm" : "webgpu");
    if (software) {
      await assert.rejects(
        () => WebGpuBackend.load({ requireHardware: true }),
        GpuUnavailableError,
      );
    }
  } finally {
    model.dispose();
  }
}));

Deno.test(deviceTest(webgpu, "device: webgpu runs the model; to() moves it both ways", async () => {
  const cpu = await tinyModel();
  const model = await tinyModel(true, undefined, "webgpu");
  try {
    assert.equal(model.cfg.device, "webgpu");
    const want = await cpu.run(TOKENS);
    const got = await model.run(TOKENS);
    assert.ok(relDiff(got.data, want.data) < 1e-5, "webgpu logits");
    // per-head matrices move with the model
    model.setUseAttnResult(true);
    cpu.setUseAttnResult(true);
    const name = "blocks.1.attn.hook_result";
    const onGpu = (await model.runWithCache(TOKENS, { namesFilter: [name] })).cache.get(name);
    await model.to("wasm");
    assert.equal(model.cfg.device, "wasm");
    assert.equal(deviceOf(model.backend), "wasm");
    // on the same kernels as a model loaded there: the same bits
    assert.deepEqual((await model.run(TOKENS)).data, want.data);
    const onCpu = (await model.runWithCache(TOKENS, { namesFilter: [name] })).cache;
    const ref = (await cpu.runWithCache(TOKENS, { namesFilter: [name] })).cache;
    assert.deepEqual(onCpu.get(name).data, ref.get(name).data);
    assert.ok(relDiff(onGpu.data, ref.get(name).data) < 1e-5, "hook_result on webgpu");
    await model.to("webgpu");
    assert.equal(model.cfg.device, "webgpu");
    assert.ok(relDiff((await model.run(TOKENS)).data, want.data) < 1e-5, "moved back");
  } finally {
    model.dispose();
    cpu.dispose();
  }
}));

Deno.test(
  deviceTest(webgpu, "device: greedy generation with the KV cache matches wasm", async () => {
    const cpu = await tinyModel();
    const model = await tinyModel(true, undefined, "webgpu");
    try {
      const opts = { maxNewTokens: 6, temperature: 0 };
      assert.deepEqual(await model.generate(TOKENS, opts), await cpu.generate(TOKENS, opts));
    } finally {
      model.dispose();
      cpu.dispose();
    }
  }),
);

Deno.test(
  deviceTest(
    webgpu,
    "device: a buffer past the adapter's limit is a GpuOutOfMemoryError",
    async () => {
      const backend = await WebGpuBackend.load();
      try {
        using scope = backend.scope();
        assert.throws(() => scope.alloc(2 ** 40), GpuOutOfMemoryError);
        // nothing was allocated, and the backend still works
        const x = scope.upload(new Float32Array([1, 2, 3]));
        assert.deepEqual(await backend.read(x), new Float32Array([1, 2, 3]));
      } finally {
        backend.close();
      }
    },
  ),
);

for (const dir of GEMMA_FIXTURES) {
  Deno.test(deviceTest(webgpu, `device: ${dir}'s gradients on webgpu equal wasm's`, async () => {
    // 10 positions: the window (4) bites on every local layer; both softcaps are on.
    const tokens = [[2, 5, 9, 33, 17, 8, 90, 4, 61, 12], [7, 7, 3, 81, 44, 2, 19, 5, 5, 70]];
    const gpu = await loadGemma(dir, false, { device: "webgpu" });
    const cpu = await loadGemma(dir, false);
    try {
      const opts = { returnType: "loss", inclBwdCache: true } as const;
      const a = await gpu.runWithCache(tokens, opts), b = await cpu.runWithCache(tokens, opts);
      assert.ok(Math.abs(a.loss! - b.loss!) <= 1e-5 * b.loss!, `loss ${a.loss} vs ${b.loss}`);
      let n = 0;
      for (const name of b.cache.keys()) {
        // 1e-4 of each tensor's largest value: the golden tests' bound for float32 gradients
        const err = relDiff(a.cache.get(name).data, b.cache.get(name).data);
        assert.ok(err < 1e-4, `${name}: ${err}`);
        n++;
      }
      assert.ok(n > 50, `${n} cached tensors`);
    } finally {
      gpu.dispose();
      cpu.dispose();
    }
  }));
}

Deno.test(
  deviceTest(webgpu, "device: a lost device is a GpuDeviceLostError at the next use", async () => {
    const gpu = await GpuDevice.load();
    const buffer = gpu.createBuffer(16);
    gpu.device.destroy(); // what a driver reset looks like from here
    await gpu.device.lost;
    await assert.rejects(() => gpu.read(buffer, 0, 16), GpuDeviceLostError);
    assert.throws(() => gpu.createBuffer(16), GpuDeviceLostError);
  }),
);
