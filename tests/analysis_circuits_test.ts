/**
 * Circuits on the embedded model against dense products of the public weight getters, and the
 * K-composition top-1 of a GPT-2-small-shape model in bounded memory.
 */
import type { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import assert from "node:assert/strict";
import {
  FactoredMatrix,
  HookedTransformer,
  InputError,
  kCompositionCircuit,
  ovCircuit,
  qkCircuit,
  select,
  syntheticGpt2,
  top1Accuracy,
} from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { deviceTest, TEST_DEVICES } from "./backend_harness.ts";

const webgpu = TEST_DEVICES.find((d) => d.device === "webgpu")!;

/** a @ b in float64 (as float32 output). */
function mm(a: Tensor, b: Tensor): Tensor {
  const [m, k] = a.shape, [, n] = b.shape;
  const out = new Float32Array(m * n);
  const acc = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    acc.fill(0);
    for (let p = 0; p < k; p++) {
      const x = a.data[i * k + p];
      for (let j = 0; j < n; j++) acc[j] += x * b.data[p * n + j];
    }
    out.set(acc, i * n);
  }
  return { data: out, shape: [m, n] };
}

function tr(a: Tensor): Tensor {
  const [m, n] = a.shape;
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) out[j * m + i] = a.data[i * n + j];
  return { data: out, shape: [n, m] };
}

function close(a: Float32Array, b: Float32Array, tol: number, what: string) {
  let scale = 0, worst = 0;
  for (let i = 0; i < b.length; i++) {
    scale = Math.max(scale, Math.abs(b[i]));
    worst = Math.max(worst, Math.abs(a[i] - b[i]));
  }
  assert.ok(worst <= tol * scale, `${what}: worst difference ${worst} (scale ${scale})`);
}

function denseTop1(M: Float32Array, n: number): number {
  let hits = 0;
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < n; j++) if (M[i * n + j] > M[i * n + best]) best = j;
    if (best === i) hits++;
  }
  return hits / n;
}

Deno.test("induction-toy circuits equal dense products of the weight getters", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy");
  const V = model.cfg.dVocab;
  const W_E = model.W_E, W_Q = model.W_Q, W_K = model.W_K, W_V = model.W_V, W_O = model.W_O;
  const W_U = model.W_U;

  // K-composition 0.2 -> 1.2: Q = W_E W_Q[1,2], K = W_E W_V[0,2] W_O[0,2] W_K[1,2], M = Q K^T.
  const kc = kCompositionCircuit(model, [0, 2], [1, 2]);
  assert.ok(kc instanceof FactoredMatrix);
  assert.deepEqual(kc.shape, [V, V]);
  assert.equal(kc.mdim, model.cfg.dHead);
  const Q = mm(W_E, select(W_Q, 1, 2));
  const K = mm(mm(mm(W_E, select(W_V, 0, 2)), select(W_O, 0, 2)), select(W_K, 1, 2));
  close(kc.A.data, Q.data, 1e-5, "Q");
  close(kc.B.data, tr(K).data, 1e-5, "K^T");
  const dense = kc.AB.data;
  close(dense, mm(Q, tr(K)).data, 1e-5, "Q K^T");
  const acc = await top1Accuracy(kc);
  assert.equal(acc, denseTop1(dense, V));

  // OV circuit of the induction head: W_E W_V W_O W_U.
  const ov = ovCircuit(model, 1, 2);
  close(ov.A.data, mm(W_E, select(W_V, 1, 2)).data, 1e-5, "W_E W_V");
  close(ov.B.data, mm(select(W_O, 1, 2), W_U).data, 1e-5, "W_O W_U");
  const copying = await top1Accuracy(ov, { blockRows: 100 });
  assert.equal(copying, denseTop1(ov.AB.data, V));
  assert.ok(copying > 0.5, `1.2's OV copying top-1 ${copying}`);

  // QK circuit: W_E W_Q (W_E W_K)^T.
  const qk = qkCircuit(model, 2, 1);
  close(
    qk.AB.data,
    mm(mm(W_E, select(W_Q, 2, 1)), tr(mm(W_E, select(W_K, 2, 1)))).data,
    1e-5,
    "QK",
  );

  assert.throws(() => kCompositionCircuit(model, [3, 0], [1, 2]), InputError);
  assert.throws(() => ovCircuit(model, 0, 4), InputError);
});

Deno.test("induction-toy K-composition: previous-token heads compose with the induction head", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy");
  const kcomp = async (l1: number, h1: number) =>
    await top1Accuracy(kCompositionCircuit(model, [l1, h1], [1, 2]));
  const fromPrev = [await kcomp(0, 2), await kcomp(0, 3)];
  const fromOthers = [await kcomp(0, 0), await kcomp(0, 1)];
  console.log(
    `K-composition top-1 into 1.2: from 0.2 ${fromPrev[0]}, 0.3 ${fromPrev[1]}; ` +
      `from 0.0 ${fromOthers[0]}, 0.1 ${fromOthers[1]}`,
  );
  for (const p of fromPrev) {
    assert.ok(p > 0.2, `previous-token head K-composition ${p}`);
    for (const o of fromOthers) assert.ok(p > 5 * o + 0.05);
  }
});

Deno.test(
  deviceTest(
    webgpu,
    "induction-toy top-1 accuracies stream on webgpu to wasm's answers",
    async () => {
      // On WebGPU the stream's blocks are 256 rows (each block's argmax is a round trip), on one wasm
      // thread 16; the entries of M are float32 dot products of d_head = 32 terms summed in another
      // order on each device, so an argmax could only move on a near tie, which these rows do not have.
      const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
      try {
        const accuracies = async () => [
          await top1Accuracy(kCompositionCircuit(model, [0, 2], [1, 2])),
          await top1Accuracy(kCompositionCircuit(model, [0, 3], [1, 2])),
          await top1Accuracy(ovCircuit(model, 1, 2)),
        ];
        const onWasm = await accuracies();
        await model.to("webgpu");
        assert.deepEqual(await accuracies(), onWasm);
        assert.ok(onWasm[0] > 0.2, `K-composition 0.2 -> 1.2 top-1 ${onWasm[0]}`);
      } finally {
        model.dispose();
      }
    },
  ),
);

Deno.test("GPT-2-small shape: K-composition top-1 streams 50257 x 50257 in bounded memory", async () => {
  const { config, weights } = syntheticGpt2({
    nLayers: 12,
    nHeads: 12,
    dModel: 768,
    dVocab: 50257,
    nCtx: 1024,
    seed: 3,
  });
  const model = await HookedTransformer.fromBytes(config, weights);
  const k = model.backend as WasmBackend;
  const base = k.bytesInUse;
  const circuit = kCompositionCircuit(model, [4, 11], [5, 5]);
  assert.deepEqual(circuit.shape, [50257, 50257]);
  assert.equal(k.bytesInUse, base, "building the circuit keeps nothing in WebAssembly memory");
  assert.throws(() => circuit.AB, InputError, "rowBlocks");
  let peak = 0, calls = 0;
  const t0 = performance.now();
  // The dense path streams every row block (auto would take the bounds at this size: they are
  // tested in analysis_top1_bounds_test.ts).
  const acc = await top1Accuracy(circuit, {
    method: "dense",
    onProgress: () => {
      calls++;
      peak = Math.max(peak, k.bytesInUse - base);
    },
  });
  const seconds = (performance.now() - t0) / 1000;
  assert.ok(acc >= 0 && acc < 0.01, `random weights: top-1 ${acc}`);
  // The default block: 16 rows on one thread, 128 on several.
  const blockRows = k.threads > 1 ? 128 : 16;
  assert.equal(calls, Math.ceil(50257 / blockRows) + 1);
  // B packed (64 x 50264 floats, 12.3 MiB) plus one block of A and of M (3.1 or 24.5 MiB).
  const expected = 4 * (k.kernels.packedSize(64, 50257) + blockRows * 64 + blockRows * 50257);
  assert.ok(peak <= expected + 2 ** 20, `WebAssembly bytes held while streaming: ${peak}`);
  assert.equal(k.bytesInUse, base);
  console.log(
    `GPT-2-small-shape K-composition top-1: ${seconds.toFixed(1)} s (${k.threads} threads, ` +
      `${blockRows}-row blocks), ` +
      `${(peak / 2 ** 20).toFixed(1)} MiB of WebAssembly memory while streaming, ` +
      `rss ${(Deno.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`,
  );
});
