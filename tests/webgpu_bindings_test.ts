/**
 * Rules of WebGPU that Chromium's Dawn enforces and Deno's wgpu does not, kept by the WebGPU
 * backend's device layer (`backend/webgpu/device.ts`) so that the kernels run the same in both
 * (the browser example's WebGPU test, `browser_webgpu_test.ts`, found them):
 * - two writable storage bindings of one dispatch must not overlap in one buffer: a read-only view
 *   that overlaps another binding is bound as a copy of its range, and the kernel computes the
 *   same; two written views that overlap are a KernelError;
 * - an error no error scope catches (a refused bind group drops the whole submission) is a typed
 *   error at the next host read, never silent zeros.
 */
import assert from "node:assert/strict";
import { GpuDevice } from "../backend/webgpu/device.ts";
import { header } from "../backend/webgpu/wgsl.ts";
import { KernelError } from "../core/errors.ts";
import { deviceTest, TEST_DEVICES } from "./backend_harness.ts";

const webgpu = TEST_DEVICES.find((d) => d.device === "webgpu")!;

/** out[i] = a[i] + 10 b[i] over n floats: reads a and b, writes out. */
const ADD = header(["n: u32"], ["a", "b", "out"]) + `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let i = id.x;
  if (i >= p.n) { return; }
  out[i] = a[i] + 10.0 * b[i];
}`;

/** a[i] = i and b[i] = -i: writes both. */
const FILL = header(["n: u32"], ["a", "b"]) + `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let i = id.x;
  if (i >= p.n) { return; }
  a[i] = f32(i);
  b[i] = -f32(i);
}`;

Deno.test(
  deviceTest(webgpu, "webgpu bindings: overlapping read-only views of one buffer", async () => {
    const gpu = await GpuDevice.load();
    try {
      const n = 100;
      // One buffer of 2n floats: x[j] = j; a = x[0, 2n) and b = x[64, 2n) overlap.
      const src = gpu.createBuffer(2 * n * 4);
      gpu.write(src, 0, Float32Array.from({ length: 2 * n }, (_, j) => j));
      const out = gpu.createBuffer(n * 4);
      gpu.dispatch(
        ADD,
        [n],
        [
          { buffer: src, offset: 0, size: 2 * n * 4 },
          { buffer: src, offset: 256, size: 2 * n * 4 - 256 },
          { buffer: out, offset: 0, size: n * 4 },
        ],
        Math.ceil(n / 64),
      );
      const got = new Float32Array(await gpu.read(out, 0, n * 4));
      for (let i = 0; i < n; i++) assert.equal(got[i], i + 10 * (i + 64), `out[${i}]`);
      // The source is untouched (the copy is read, not written back).
      const x = new Float32Array(await gpu.read(src, 0, 2 * n * 4));
      assert.equal(x[150], 150);
    } finally {
      gpu.destroy();
    }
  }),
);

Deno.test(
  deviceTest(webgpu, "webgpu bindings: two written views that overlap are refused", async () => {
    const gpu = await GpuDevice.load();
    try {
      const buf = gpu.createBuffer(1024);
      assert.throws(
        () =>
          gpu.dispatch(FILL, [8], [
            { buffer: buf, offset: 0, size: 1024 },
            { buffer: buf, offset: 256, size: 768 },
          ], 1),
        (e: unknown) => e instanceof KernelError && /two overlapping views/.test(e.message),
      );
      // Apart, the same kernel runs.
      const other = gpu.createBuffer(1024);
      gpu.dispatch(FILL, [8], [
        { buffer: buf, offset: 0, size: 1024 },
        { buffer: other, offset: 0, size: 1024 },
      ], 1);
      assert.deepEqual([...new Float32Array(await gpu.read(other, 0, 16))], [-0, -1, -2, -3]);
    } finally {
      gpu.destroy();
    }
  }),
);

Deno.test(
  deviceTest(webgpu, "webgpu bindings: a command the device refuses is an error", async () => {
    const gpu = await GpuDevice.load();
    try {
      const out = gpu.createBuffer(64);
      // One binding where the kernel declares three: the bind group is invalid.
      gpu.dispatch(ADD, [4], [{ buffer: out, offset: 0, size: 64 }], 1);
      await assert.rejects(
        () => gpu.read(out, 0, 16),
        (e: unknown) => e instanceof KernelError && /refused a command/.test(e.message),
      );
    } finally {
      gpu.destroy();
    }
  }),
);
