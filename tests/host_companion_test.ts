/**
 * The host companion of an asynchronous backend (`Backend.host`): a WebGPU backend loaded by
 * device name carries a WebAssembly one, and the synchronous helpers (`matmul`, `einsum`, the
 * circuit tools and composition scores built on them) run their products of host arrays on it.
 * So their results on a WebGPU model are bit-identical to a WebAssembly model's (the same kernel;
 * its results do not depend on the thread count), where they used to come from a float64
 * JavaScript loop. Also: `model.to` keeps the companion right, `"auto"` without a hardware
 * adapter returns the WebAssembly backend it loaded, and `WebGpuBackend.load` refuses a
 * non-eager host and closes the one it owns.
 */
import assert from "node:assert/strict";
import {
  allCompositionScores,
  type Backend,
  einsum,
  FactoredMatrix,
  HookedTransformer,
  InputError,
  kCompositionCircuit,
  loadBackend,
  matmul,
  ovCircuit,
  qkCircuit,
  type Tensor,
  top1Accuracy,
} from "../mod.ts";
import { WebGpuBackend } from "../backend/webgpu/webgpu_backend.ts";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { deviceTest, TEST_DEVICES } from "./backend_harness.ts";

const webgpu = TEST_DEVICES.find((d) => d.device === "webgpu")!;

/** Seeded values in [-1, 1) (a linear congruential generator). */
function seeded(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** Asserts `a` and `b` hold the same float32 values, bit for bit. */
function assertBitEqual(a: Float32Array, b: Float32Array, what: string) {
  assert.equal(a.length, b.length, `${what}: lengths`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) {
      assert.fail(`${what}: element ${i} is ${a[i]} on one and ${b[i]} on the other`);
    }
  }
}

Deno.test(
  deviceTest(
    webgpu,
    "host companion: loadBackend('webgpu') carries an eager WebAssembly backend",
    async () => {
      const { backend, device } = await loadBackend("webgpu", { threads: 2 });
      try {
        assert.equal(device, "webgpu");
        assert.ok(!backend.eager, "WebGPU answers asynchronously");
        assert.ok(
          backend.host instanceof WasmBackend,
          "its host companion is a WebAssembly backend",
        );
        assert.ok(backend.host.eager);
        assert.equal(backend.host.threads, 2, "the companion takes the threads option");
      } finally {
        backend.close();
      }
      // By default the companion starts no worker threads (a WebGPU page keeps no idle kernel
      // threads).
      const plain = await loadBackend("webgpu");
      assert.equal(plain.backend.host?.threads, 1);
      plain.backend.close();
    },
  ),
);

Deno.test("host companion: an eager backend has none; 'auto' without a hardware adapter is plain wasm", async () => {
  const wasm = await loadBackend("wasm", { threads: 1 });
  assert.equal(wasm.backend.host, undefined);
  wasm.backend.close();
  // Where a hardware adapter exists, "auto" takes it (and its companion); elsewhere it returns the
  // WebAssembly backend it loaded first.
  const auto = await loadBackend("auto", { threads: 1 });
  try {
    if (auto.device === "wasm") {
      assert.ok(auto.backend.eager);
      assert.equal(auto.backend.host, undefined);
    } else {
      assert.ok(auto.backend.host?.eager);
    }
  } finally {
    auto.backend.close();
  }
});

Deno.test(
  deviceTest(
    webgpu,
    "host companion: WebGpuBackend.load refuses a non-eager host and closes its own",
    async () => {
      let closed = 0;
      const fake = { eager: true, close: () => closed++ } as unknown as Backend;
      const gpu = await WebGpuBackend.load({ host: fake });
      assert.equal(gpu.host, fake);
      gpu.close();
      assert.equal(closed, 1, "closing the WebGPU backend closes its host companion");
      await assert.rejects(
        () => WebGpuBackend.load({ host: { eager: false } as unknown as Backend }),
        (e) => e instanceof InputError && /eager/.test(e.message),
      );
      // Loaded directly without a host, it has none (the helpers then compute in JavaScript).
      const bare = await WebGpuBackend.load();
      assert.equal(bare.host, undefined);
      bare.close();
    },
  ),
);

Deno.test(
  deviceTest(
    webgpu,
    "host companion: matmul and einsum on a WebGPU backend equal the WebAssembly backend's bit for bit",
    async () => {
      // 48 x 300 x 200: 2.9M multiply-adds, above the size at which products go to a backend.
      const [m, k, n] = [48, 300, 200];
      const a: Tensor = { data: seeded(m * k, 1), shape: [m, k] };
      const b: Tensor = { data: seeded(k * n, 2), shape: [k, n] };
      // Two threads on the companion, one on the wasm backend: results do not depend on the count.
      const gpu = await loadBackend("webgpu", { threads: 2 });
      const wasm = await WasmBackend.load({ threads: 1 });
      try {
        const onGpu = matmul(a, b, gpu.backend).data;
        const onWasm = matmul(a, b, wasm).data;
        assertBitEqual(onGpu, onWasm, "matmul");
        assertBitEqual(
          einsum("ij,jk->ik", a, b, { backend: gpu.backend }).data,
          onWasm,
          "einsum",
        );
        // The reference: the float64 product; a float32 sum of k terms is within k 2^-24 of
        // sum |a_ip b_pj| of it (the standard bound on recursive summation; the kernel's order is
        // another order of the same k terms, the bound holds for every order).
        const js = matmul(a, b).data; // no backend: float64 accumulation, rounded once
        let differs = 0;
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let ref = 0, mag = 0;
            for (let p = 0; p < k; p++) {
              ref += a.data[i * k + p] * b.data[p * n + j];
              mag += Math.abs(a.data[i * k + p] * b.data[p * n + j]);
            }
            const got = onGpu[i * n + j];
            assert.ok(
              Math.abs(got - ref) <= k * 2 ** -24 * mag,
              `C[${i}, ${j}] = ${got}, float64 ${ref} (bound ${k * 2 ** -24 * mag})`,
            );
            if (got !== js[i * n + j]) differs++;
          }
        }
        // The test's power: the float32 kernel and the float64 loop round differently somewhere, so
        // bit-equality above says the product ran on the companion, not in JavaScript.
        assert.ok(differs > 0, "the kernel's result differs from the float64 loop's somewhere");
      } finally {
        gpu.backend.close();
        wasm.close();
      }
    },
  ),
);

/** The circuit tools' host products and the composition scores of `model`. */
function circuits(model: HookedTransformer): Record<string, Float32Array> {
  const k = kCompositionCircuit(model, [0, 2], [1, 2]);
  const ov = ovCircuit(model, 1, 2);
  const qk = qkCircuit(model, 1, 2);
  return {
    "kComposition Q": k.A.data,
    "kComposition K^T": k.B.data,
    "OV W_E W_V": ov.A.data,
    "OV W_O W_U": ov.B.data,
    "QK W_E W_Q": qk.A.data,
    "K composition scores": allCompositionScores(model, "K").data,
    "V composition scores": allCompositionScores(model, "V").data,
  };
}

Deno.test(
  deviceTest(
    webgpu,
    "host companion: circuits and composition scores on webgpu equal wasm's bit for bit, across model.to",
    async () => {
      const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
      try {
        const onWasm = circuits(model);
        await model.to("webgpu");
        assert.equal(model.cfg.device, "webgpu");
        assert.ok(model.backend.host?.eager, "the WebGPU backend has its host companion");
        const onGpu = circuits(model);
        for (const [name, x] of Object.entries(onWasm)) assertBitEqual(onGpu[name], x, name);
        await model.to("wasm");
        assert.equal(model.backend.host, undefined);
        const back = circuits(model);
        for (const [name, x] of Object.entries(onWasm)) {
          assertBitEqual(back[name], x, `${name} (back)`);
        }
      } finally {
        model.dispose();
      }
    },
  ),
);

Deno.test(
  deviceTest(
    webgpu,
    "host companion: top-1 by bounds runs its products there, as on wasm",
    async () => {
      // B = 0.3 A^T + noise: the diagonal wins on some rows, not most (a copying circuit's shape).
      const n = 2048, k = 32;
      const a = seeded(n * k, 11), noise = seeded(k * n, 12), b = new Float32Array(k * n);
      for (let p = 0; p < k; p++) {
        for (let j = 0; j < n; j++) b[p * n + j] = 0.3 * a[j * k + p] + noise[p * n + j];
      }
      const { backend: gpu } = await loadBackend("webgpu");
      const cpu = await WasmBackend.load({ threads: 1 });
      try {
        const host = gpu.host!;
        let hostProducts = 0;
        const matmul = host.matmul.bind(host);
        host.matmul = (...args: Parameters<Backend["matmul"]>) => {
          hostProducts++;
          return matmul(...args);
        };
        const factored = (backend: Backend) =>
          new FactoredMatrix({ data: a, shape: [n, k] }, { data: b, shape: [k, n] }, { backend });
        const want = await top1Accuracy(factored(cpu), { method: "dense" });
        assert.ok(want > 0 && want < 0.5, `a test with power: top-1 ${want}`);
        assert.equal(await top1Accuracy(factored(cpu), { method: "bounds" }), want);
        assert.equal(await top1Accuracy(factored(gpu), { method: "bounds" }), want);
        assert.ok(hostProducts > 0, "the bounds' products ran on the companion");
      } finally {
        gpu.close();
        cpu.close();
      }
    },
  ),
);
