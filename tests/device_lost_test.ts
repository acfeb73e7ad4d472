/**
 * A model whose GPU device is lost (a driver reset, the GPU process crashing, or the device
 * destroyed: here the model's GPUDevice, caught as the backend requests it, is destroyed behind the
 * library's back, as a reset would) fails its next call
 * with a GpuDeviceLostError that names the way out, and `model.to("wasm")` recovers it: the
 * weights are kept on the host, so the moved model computes the same bits as one loaded on
 * WebAssembly. Skipped without a WebGPU adapter unless CI is set (tests/backend_harness.ts).
 */
import assert from "node:assert/strict";
import { GpuDeviceLostError } from "../mod.ts";
import { deviceTest, TEST_DEVICES } from "./backend_harness.ts";
import { tinyModel } from "./toolkit_helpers.ts";

const TOKENS = [[95, 3, 17, 42, 8, 3, 17, 42, 8, 3]];
const webgpu = TEST_DEVICES.find((d) => d.device === "webgpu")!;

/** Runs `load` and returns what it made with the GPUDevices requested meanwhile. */
async function catchingDevices<T>(load: () => Promise<T>): Promise<[T, GPUDevice[]]> {
  const proto = GPUAdapter.prototype;
  const original = proto.requestDevice;
  const devices: GPUDevice[] = [];
  proto.requestDevice = async function (this: GPUAdapter, desc?: GPUDeviceDescriptor) {
    const device = await original.call(this, desc);
    devices.push(device);
    return device;
  };
  try {
    return [await load(), devices];
  } finally {
    proto.requestDevice = original;
  }
}

Deno.test(
  deviceTest(
    webgpu,
    "device lost: the next call says so; to('wasm') recovers the model",
    async () => {
      const cpu = await tinyModel();
      const [model, devices] = await catchingDevices(() => tinyModel(true, undefined, "webgpu"));
      try {
        const want = await cpu.run(TOKENS);
        await model.run(TOKENS); // it ran on the GPU before the loss
        assert.equal(devices.length, 1, "the model requested one GPU device");
        devices[0].destroy(); // what a driver reset looks like from here
        await devices[0].lost;
        const lost = await model.run(TOKENS).then(() => null, (e) => e);
        assert.ok(lost instanceof GpuDeviceLostError, `a GpuDeviceLostError, got ${lost}`);
        assert.match(lost.message, /to\("wasm"\)/, "the message names the way out");
        // Hooks and the cache fail the same way, without hanging.
        await assert.rejects(() => model.runWithCache(TOKENS), GpuDeviceLostError);
        await model.to("wasm");
        assert.equal(model.cfg.device, "wasm");
        assert.deepEqual((await model.run(TOKENS)).data, want.data, "the same bits as wasm's");
        const { cache } = await model.runWithCache(TOKENS, {
          namesFilter: ["blocks.1.hook_resid_post"],
        });
        const ref = (await cpu.runWithCache(TOKENS, { namesFilter: ["blocks.1.hook_resid_post"] }))
          .cache;
        assert.deepEqual(
          cache.get("blocks.1.hook_resid_post").data,
          ref.get("blocks.1.hook_resid_post").data,
        );
      } finally {
        model.dispose();
        cpu.dispose();
      }
    },
  ),
);
