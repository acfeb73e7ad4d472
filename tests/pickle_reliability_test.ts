/**
 * `pytorch_model.bin` from strangers, past what the mutation fuzz (`torch_bin_fuzz_test.ts`)
 * reaches: opcode floods that used to turn 25 MB into a fatal 4.6 GB (run in a child process, peak
 * RSS measured), views aliasing one storage (memory and `checkFinite` time grew with the views, not
 * the file), and a seeded fuzz of the unpickler's opcode stream itself: random opcode programs and
 * mutations of a real state dict's pickle must return or fail with a PickleError, nothing else.
 */
import assert from "node:assert/strict";
import { PickleError } from "../core/errors.ts";
import { SeededRng } from "../core/rng.ts";
import { checkFinite } from "../io/check_finite.ts";
import { PickleFunction, unpickle } from "../io/pickle.ts";
import { readTorchCheckpoint } from "../io/torch_bin.ts";
import { runChild } from "./bounded_child.ts";
import { op, pickle, rebuildOps, stateDictPickle, torchArchive } from "./pickle_builder.ts";

const FLOOD_BYTES = 25_000_000;

for (
  const [name, byte] of [["EMPTY_DICT", 0x7d], ["EMPTY_LIST", 0x5d], ["NONE", 0x4e], [
    "MARK",
    0x28,
  ]] as const
) {
  Deno.test(`a 25 MB flood of ${name} in pytorch_model.bin ends in a PickleError under 1 GB`, async () => {
    const out = await runChild(
      `
const { readTorchCheckpoint } = await import(REPO + "io/torch_bin.ts");
const { torchArchive } = await import(REPO + "tests/pickle_builder.ts");
const pkl = new Uint8Array(${FLOOD_BYTES}).fill(${byte});
pkl[0] = 0x80; pkl[1] = 2;
const file = torchArchive(pkl, {});
const t0 = performance.now();
let error = "none";
try { readTorchCheckpoint(file, "flood.bin"); } catch (e) { error = e.name + ": " + e.message; }
report({ error, ms: performance.now() - t0, fileBytes: file.length });
`,
      { timeoutMs: 60_000, heapMiB: 1024 },
    );
    assert.ok(!out.timedOut, "the flood did not end within 60 s");
    assert.ok(out.result, `the child died (code ${out.code}): ${out.stderr.slice(-500)}`);
    const r = out.result as { error: string; ms: number; peakRssMiB: number };
    assert.match(r.error, /^PickleError: .*more than 1000000 values/);
    assert.ok(r.peakRssMiB < 1024, `peak RSS ${r.peakRssMiB} MiB`);
    console.log(`${name} flood: ${Math.round(r.ms)} ms, peak RSS ${Math.round(r.peakRssMiB)} MiB`);
  });
}

Deno.test("the pickle budget: a real state dict fits it, a smaller budget refuses it, the option raises it", () => {
  const storage = new Uint8Array(16);
  const pkl = stateDictPickle([["w", rebuildOps({ numel: 4, size: [2, 2], stride: [2, 1] })]]);
  const file = torchArchive(pkl, { "0": storage });
  assert.deepEqual(readTorchCheckpoint(file, "ok.bin").info("w").shape, [2, 2]);
  assert.throws(
    () => readTorchCheckpoint(file, "small.bin", { maxPickleValues: 10 }),
    /more than 10 values/,
  );
  assert.throws(() => readTorchCheckpoint(file, "x.bin", { maxPickleValues: -1 }), PickleError);
});

/** `views` tensors, each a full [width, width] view of one float32 storage of width^2 elements. */
function aliasedCheckpoint(views: number, width: number, nanAt = -1): Uint8Array {
  const data = new Float32Array(width * width).fill(0.5);
  if (nanAt >= 0) data[nanAt] = NaN;
  const entries: Array<[string, Uint8Array]> = [];
  for (let i = 0; i < views; i++) {
    entries.push([
      `t${i}`,
      rebuildOps({ numel: width * width, size: [width, width], stride: [width, 1] }),
    ]);
  }
  return torchArchive(stateDictPickle(entries), { "0": new Uint8Array(data.buffer) });
}

Deno.test("aliasing: 4000 views of one storage are refused at parse (memory and time tied to the file)", () => {
  // 4000 views of 1 MiB: 4 GB of float32 from a 1 MiB file; before, the reader accepted it and
  // checkFinite decoded every view (36 s for 16 MiB).
  const file = aliasedCheckpoint(4000, 512);
  const t0 = performance.now();
  assert.throws(() => readTorchCheckpoint(file, "aliased.bin"), /maxExpansion/);
  console.log(`4000 aliased views refused in ${Math.round(performance.now() - t0)} ms`);
  // Tied weights (a few views) still load; the option admits the rare legitimate file.
  assert.equal(readTorchCheckpoint(aliasedCheckpoint(3, 64), "tied.bin").names().length, 3);
  const many = readTorchCheckpoint(aliasedCheckpoint(40, 64), "many.bin", { maxExpansion: 64 });
  assert.equal(many.names().length, 40);
});

Deno.test("checkFinite reads each storage once, however many views alias it; a NaN is still found", () => {
  const file = aliasedCheckpoint(200, 256);
  const ckpt = readTorchCheckpoint(file, "views.bin", { maxExpansion: 1000 });
  let reads = 0;
  const counting = {
    fileName: ckpt.fileName,
    names: () => ckpt.names(),
    has: (n: string) => ckpt.has(n),
    info: (n: string) => ckpt.info(n),
    tensor: (n: string) => (reads++, ckpt.tensor(n)),
    storageOf: (n: string) => ckpt.storageOf(n),
  };
  checkFinite(counting);
  assert.equal(reads, 0, "a clean storage is scanned once, not decoded per view");
  const bad = readTorchCheckpoint(aliasedCheckpoint(5, 64, 64 * 3 + 2), "nan.bin");
  assert.throws(() => checkFinite(bad), /tensor "t0" holds NaN at \[3, 2\]/);
});

// ---- A seeded fuzz of the opcode stream ----

/** One random opcode with plausible (sometimes forged) arguments. */
function randomOpcode(rng: SeededRng): number[] {
  const simple = [
    0x28,
    0x2e,
    0x30,
    0x31,
    0x32,
    0x4e,
    0x88,
    0x89,
    0x7d,
    0x5d,
    0x29,
    0x74,
    0x85,
    0x86,
    0x87,
    0x6c,
    0x64,
    0x61,
    0x65,
    0x73,
    0x75,
    0x94,
    0x52,
    0x62,
    0x51,
    0x93,
  ];
  switch (rng.int(8)) {
    case 0:
      return [0x4b, rng.int(256)]; // BININT1
    case 1:
      return [0x71, rng.int(4)]; // BINPUT
    case 2:
      return [0x68, rng.int(4)]; // BINGET
    case 3:
      return [0x8c, 1, 0x61 + rng.int(3)]; // SHORT_BINUNICODE of one letter
    case 4:
      return [
        ...op.global(
          ["collections", "torch._utils", "os"][rng.int(3)],
          ["OrderedDict", "_rebuild_tensor_v2", "system"][rng.int(3)],
        ),
      ];
    case 5:
      return [rng.int(256)]; // any byte, arguments or not
    default:
      return [simple[rng.int(simple.length)]];
  }
}

Deno.test("fuzz: random opcode programs and mutated state dicts unpickle or fail with PickleError", () => {
  const rng = new SeededRng(2121, "pickle-opcodes");
  const orderedDict = new PickleFunction("collections.OrderedDict", () => new Map());
  const opts = {
    maxValues: 5000,
    findGlobal: (
      m: string,
      n: string,
    ) => (m === "collections" && n === "OrderedDict" ? orderedDict : undefined),
    persistentLoad: () => {
      throw new PickleError("no storages here");
    },
  };
  const real = stateDictPickle([
    ["a", pickle(op.mark(), op.int(1), op.str("x"), op.tuple())],
    ["b", pickle(op.emptyDict(), op.str("k"), op.int(300), [0x73])],
  ]);
  let returned = 0, refused = 0;
  const t0 = performance.now();
  for (let k = 0; k < 6000; k++) {
    let bytes: Uint8Array;
    if (k % 2 === 0) {
      const ops = [[0x80, 2]];
      for (let i = 0, n = 1 + rng.int(40); i < n; i++) ops.push(randomOpcode(rng));
      if (rng.int(2) === 0) ops.push([0x2e]);
      bytes = pickle(...ops);
    } else {
      const at = rng.int(real.length);
      const insert = randomOpcode(rng);
      bytes = rng.int(3) === 0
        ? real.slice(0, at)
        : pickle(real.subarray(0, at), insert, real.subarray(at + rng.int(3)));
    }
    try {
      unpickle(bytes, opts);
      returned++;
    } catch (e) {
      if (!(e instanceof PickleError)) {
        throw new Error(`mutant ${k} (${Array.from(bytes.slice(0, 80))}) threw ${e}`);
      }
      refused++;
    }
  }
  // A flood past the budget inside the fuzz's small budget: refused, not grown.
  assert.throws(() => unpickle(new Uint8Array(20_000).fill(0x7d), opts), /more than 5000 values/);
  assert.ok(returned > 50 && refused > 3000, `${returned} returned, ${refused} refused`);
  console.log(`6000 opcode mutants in ${Math.round(performance.now() - t0)} ms`);
});

Deno.test("a 12 MiB pytorch_model.bin whose views describe a 12-layer, width-1024 GPT-2: refused before it is materialised", async () => {
  // Every tensor is a view of one 12 MiB storage: 97M float32 weights (390 MB) from 12 MiB.
  // Before, fromPretrained accepted such files (an 8 MiB one peaked at 1.34 GB).
  const out = await runChild(
    `
const { HookedTransformer } = await import(REPO + "model/hooked_transformer.ts");
const { rebuildOps, stateDictPickle, torchArchive } = await import(REPO + "tests/pickle_builder.ts");
const d = 1024, V = 1024, ctx = 1024, L = 12, numel = 3 * 1024 * 1024;
const shapes = { "wte.weight": [V, d], "wpe.weight": [ctx, d], "ln_f.weight": [d], "ln_f.bias": [d] };
for (let i = 0; i < L; i++) {
  Object.assign(shapes, {
    ["h." + i + ".ln_1.weight"]: [d], ["h." + i + ".ln_1.bias"]: [d],
    ["h." + i + ".ln_2.weight"]: [d], ["h." + i + ".ln_2.bias"]: [d],
    ["h." + i + ".attn.c_attn.weight"]: [d, 3 * d], ["h." + i + ".attn.c_attn.bias"]: [3 * d],
    ["h." + i + ".attn.c_proj.weight"]: [d, d], ["h." + i + ".attn.c_proj.bias"]: [d],
    ["h." + i + ".mlp.c_fc.weight"]: [d, 2 * d], ["h." + i + ".mlp.c_fc.bias"]: [2 * d],
    ["h." + i + ".mlp.c_proj.weight"]: [2 * d, d], ["h." + i + ".mlp.c_proj.bias"]: [d],
  });
}
const entries = Object.entries(shapes).map(([name, size]) => [name, rebuildOps({
  numel, size, stride: size.length === 2 ? [size[1], 1] : [1],
})]);
const dir = await Deno.makeTempDir();
await Deno.writeTextFile(dir + "/config.json", JSON.stringify({
  model_type: "gpt2", n_layer: L, n_embd: d, n_inner: 2 * d, n_head: 16, n_positions: ctx, vocab_size: V,
}));
const file = torchArchive(stateDictPickle(entries), { "0": new Uint8Array(4 * numel) });
await Deno.writeFile(dir + "/pytorch_model.bin", file);
let error = "none";
try {
  (await HookedTransformer.fromPretrained(dir, { threads: 1 })).dispose();
} catch (e) { error = e.name + ": " + e.message; }
await Deno.remove(dir, { recursive: true });
report({ error, fileMiB: file.length / 2 ** 20 });
`,
    { timeoutMs: 60_000, heapMiB: 2048 },
  );
  assert.ok(!out.timedOut, "the load did not end within 60 s");
  assert.ok(out.result, `the child died (code ${out.code}): ${out.stderr.slice(-500)}`);
  const r = out.result as { error: string; fileMiB: number; peakRssMiB: number };
  console.log(
    `${r.fileMiB.toFixed(1)} MiB file: ${r.error.slice(0, 60)}; peak RSS ${
      Math.round(r.peakRssMiB)
    } MiB`,
  );
  assert.match(r.error, /^PickleError: .*more than 4 times the file's .*maxExpansion/);
  // Memory tied to the file: the 12 MiB read, the zip, the runtime (about 100 MiB here).
  assert.ok(r.peakRssMiB < 400, `peak RSS ${r.peakRssMiB} MiB`);
});
