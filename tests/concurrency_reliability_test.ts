/**
 * Any interleaving of the library's async calls on one model must work. The analysis streams
 * (`top1Accuracy`, `FactoredMatrix.rowBlocks`) keep B packed in a backend scope across their
 * awaits; scopes nest on the backend's one stack, so a stream that opened second and closed last
 * used to lose its arrays when the first one closed (`KernelError: a device array was used after
 * its scope was disposed`). Interleavings are forced here: host reads are held at gates the test
 * opens in a chosen order, and generators are stepped by hand in every order.
 */
import assert from "node:assert/strict";
import type { Backend } from "../backend/backend.ts";
import { FactoredMatrix, top1Accuracy } from "../analysis/factored_matrix.ts";
import { SeededRng } from "../core/rng.ts";
import type { Tensor } from "../core/tensor.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import type { WasmBackend } from "../backend/wasm/wasm_backend.ts";

function randomTensor(rng: SeededRng, shape: number[]): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = rng.normal();
  return { data, shape };
}

/** A square A B (n x n, inner k) with B near A's transpose: top-1 well above chance, below 1. */
function square(rng: SeededRng, n: number, k: number): { A: Tensor; B: Tensor } {
  const A = randomTensor(rng, [n, k]), B = randomTensor(rng, [k, n]);
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < k; p++) B.data[p * n + i] += 0.5 * A.data[i * k + p];
  }
  return { A, B };
}

/**
 * Holds every `argmaxRows` and `read` of `backend` until the test releases it: `release(tag)`
 * lets the oldest held read of the call tagged `tag` through. Calls tag themselves by the row
 * count they read (each matrix below has its own). The method is shadowed on the instance, so
 * the backend keeps its identity (the per-backend queue of model calls is keyed by it).
 */
function gateReads(backend: Backend) {
  const held: Array<{ rows: number; go: () => void }> = [];
  const b = backend as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  const original = { argmaxRows: b.argmaxRows, read: b.read };
  const waiters: Array<() => void> = [];
  const hold = (rows: number) =>
    new Promise<void>((go) => {
      held.push({ rows, go });
      waiters.splice(0).forEach((w) => w());
    });
  b.argmaxRows = async function (x, rows, ...rest) {
    await hold(rows as number);
    return await original.argmaxRows.call(backend, x, rows, ...rest);
  };
  return {
    /** Waits until a read for `rows` rows is held, then lets it through. */
    async release(rows: number) {
      for (let spins = 0; spins < 10_000; spins++) {
        const i = held.findIndex((h) => h.rows === rows);
        if (i >= 0) return held.splice(i, 1)[0].go();
        await new Promise<void>((r) => waiters.push(r));
      }
      throw new Error("no read arrived");
    },
    restore() {
      b.argmaxRows = original.argmaxRows;
      held.splice(0).forEach((h) => h.go());
    },
  };
}

Deno.test("two top1Accuracy calls: the one started first finishes first, both right", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
  try {
    const rng = new SeededRng(21, "top1-interleave");
    const small = square(rng, 40, 16), large = square(rng, 72, 16);
    // References in plain JavaScript (no backend): the same definition, another code path.
    const want = [
      await top1Accuracy(new FactoredMatrix(small.A, small.B)),
      await top1Accuracy(new FactoredMatrix(large.A, large.B)),
    ];
    assert.ok(want[0] > 0.2 && want[0] < 1 && want[1] > 0.2 && want[1] < 1, `${want}`);
    const on = (m: { A: Tensor; B: Tensor }) =>
      new FactoredMatrix(m.A, m.B, { backend: model.backend });
    // Blocks of 8 rows for the small one and 9 for the large one: the gate tells them apart.
    const gate = gateReads(model.backend);
    try {
      const first = top1Accuracy(on(small), { blockRows: 8 }); // 5 blocks
      const second = top1Accuracy(on(large), { blockRows: 9 }); // 8 blocks
      second.catch(() => {}); // awaited below; a rejection before then is not unhandled
      // Forced order: the second stream's first block, then the first stream entirely (it
      // closes its scope while the second is still open), then the rest of the second.
      await gate.release(9);
      for (let i = 0; i < 5; i++) await gate.release(8);
      assert.equal(await first, want[0]);
      for (let i = 0; i < 7; i++) await gate.release(9);
      assert.equal(await second, want[1]);
    } finally {
      gate.restore();
    }
  } finally {
    model.dispose();
  }
});

Deno.test("rowBlocks streams stepped by hand in random orders, with model runs between: every block right, memory back", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
  try {
    const backend = model.backend as WasmBackend;
    const rng = new SeededRng(21, "rowblocks-orders");
    const mats = [square(rng, 40, 16), square(rng, 56, 12), square(rng, 24, 20)];
    const tokens = [[2047, 5, 9, 13, 5, 9]];
    const logitsAlone = (await model.run(tokens)).data;
    // Each stream alone on the backend, checked against the product in plain JavaScript
    // (float64 accumulation; float32 dot products of <= 20 terms of size < 10 agree within 1e-4).
    // Interleaved, the blocks must then be the very same bits as alone.
    const want: Float32Array[] = [];
    for (const [i, m] of mats.entries()) {
      const alone = new Float32Array(m.A.shape[0] * m.B.shape[1]);
      for await (const b of new FactoredMatrix(m.A, m.B, { backend }).rowBlocks(5 + i)) {
        alone.set(b.data, b.start * m.B.shape[1]);
      }
      const js = new FactoredMatrix(m.A, m.B).AB.data;
      const worst = alone.reduce((w, x, j) => Math.max(w, Math.abs(x - js[j])), 0);
      assert.ok(worst < 1e-4, `stream ${i} alone differs from JavaScript by ${worst}`);
      want.push(alone);
    }
    const baseline = backend.bytesInUse;
    for (let schedule = 0; schedule < 40; schedule++) {
      const streams = mats.map((m, i) => ({
        gen: new FactoredMatrix(m.A, m.B, { backend }).rowBlocks(5 + i),
        want: want[i],
        n: m.B.shape[1],
        done: false,
        // Some streams stop early (a `break`): their scope closes while others are open.
        stopAfter: rng.int(3) === 0 ? rng.int(4) : Infinity,
        seen: 0,
      }));
      const runs: Promise<unknown>[] = [];
      while (streams.some((s) => !s.done)) {
        const live = streams.filter((s) => !s.done);
        const pick = rng.int(live.length + 1);
        if (pick === live.length) {
          // A model call started now, awaited later: it interleaves with the streams' steps.
          runs.push(model.run(tokens).then((r) => assert.deepEqual(r.data, logitsAlone)));
          continue;
        }
        const s = live[pick];
        if (s.seen >= s.stopAfter) {
          await s.gen.return();
          s.done = true;
          continue;
        }
        const step = await s.gen.next();
        if (step.done) {
          s.done = true;
          continue;
        }
        const { start, rows, data } = step.value;
        assert.deepEqual(
          Array.from(data),
          Array.from(s.want.subarray(start * s.n, (start + rows) * s.n)),
          `schedule ${schedule}: block at row ${start}`,
        );
        s.seen++;
      }
      await Promise.all(runs);
      assert.equal(backend.bytesInUse, baseline, `schedule ${schedule}: scopes left open`);
    }
  } finally {
    model.dispose();
  }
});

Deno.test("top1Accuracy, runs and a generation started together: each as if alone", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
  try {
    const rng = new SeededRng(21, "mixed");
    const mats = [square(rng, 64, 16), square(rng, 48, 16)];
    const tokens = [[2047, 7, 8, 7, 8, 7]];
    const on = (m: { A: Tensor; B: Tensor }) =>
      new FactoredMatrix(m.A, m.B, { backend: model.backend });
    const alone = [
      await top1Accuracy(new FactoredMatrix(mats[0].A, mats[0].B)),
      await top1Accuracy(new FactoredMatrix(mats[1].A, mats[1].B)),
      (await model.run(tokens)).data,
      await model.generate(tokens, { maxNewTokens: 3, temperature: 0 }),
    ];
    for (let k = 0; k < 3; k++) {
      const together = await Promise.all([
        top1Accuracy(on(mats[0]), { blockRows: 4 }),
        top1Accuracy(on(mats[1]), { blockRows: 3 }),
        model.run(tokens).then((r) => r.data),
        model.generate(tokens, { maxNewTokens: 3, temperature: 0 }),
      ]);
      assert.deepEqual(together, alone);
    }
  } finally {
    model.dispose();
  }
});
