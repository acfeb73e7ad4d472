import assert from "node:assert/strict";
import { PickleError, WeightsError } from "../core/errors.ts";
import { parseSafetensors } from "../io/safetensors.ts";
import { parseShardIndex, shardedTensorSource } from "../io/sharded.ts";
import type { TensorSource } from "../io/tensor_source.ts";
import { readTorchCheckpoint } from "../io/torch_bin.ts";
import { readZip } from "../io/zip.ts";
import { fixturePath } from "./fixtures.ts";
import { fromFileUrl } from "./path.ts";
import { op, pickle, rebuildOps, stateDictPickle, torchArchive } from "./pickle_builder.ts";
import { writeZip, zipEntries } from "./zip_writer.ts";

const TORCH_BIN = fromFileUrl(new URL("./fixtures/torch-bin/", import.meta.url));

function readBin(path: string): ReturnType<typeof readTorchCheckpoint> {
  return readTorchCheckpoint(Deno.readFileSync(`${TORCH_BIN}${path}`), path);
}

const isFloat = (source: TensorSource, name: string) =>
  ["F32", "F16", "BF16"].includes(source.info(name).dtype);

/** Every tensor of `expected` is in `actual` with the same dtype, shape and (floats) bits. */
function assertSameTensors(actual: TensorSource, expected: TensorSource): void {
  for (const name of expected.names()) {
    assert.ok(actual.has(name), name);
    const { dtype, shape } = expected.info(name);
    assert.deepEqual(actual.info(name), { dtype, shape }, name);
    if (!isFloat(expected, name)) continue;
    const a = actual.tensor(name);
    const b = expected.tensor(name);
    assert.deepEqual(a.shape, b.shape, name);
    // Bit patterns, so that -0 and NaN payloads count too.
    assert.deepEqual(
      new Uint32Array(a.data.buffer, a.data.byteOffset, a.data.length),
      new Uint32Array(b.data.buffer, b.data.byteOffset, b.data.length),
      name,
    );
  }
}

Deno.test("torch .bin: torch.save'd state dicts equal the safetensors fixtures, f32/f16/bf16", () => {
  for (
    const [bin, st] of [["f32", "tiny-hf-f32"], ["f16", "tiny-hf-f16"], ["bf16", "tiny-hf-bf16"]]
  ) {
    const ckpt = readBin(`tiny-gpt2-${bin}/pytorch_model.bin`);
    const reference = parseSafetensors(Deno.readFileSync(`${fixturePath(st)}/model.safetensors`));
    assert.deepEqual(ckpt.names().sort(), reference.names().sort());
    assertSameTensors(ckpt, reference);
  }
});

Deno.test("torch .bin: shared, transposed, offset and scalar views, parameters, other dtypes", () => {
  const ckpt = readBin("views.bin");
  const expected: Record<string, { dtype: string; shape: number[]; values: number[] }> = JSON
    .parse(Deno.readTextFileSync(`${TORCH_BIN}views.json`));
  const dtypes: Record<string, string> = {
    float32: "F32",
    float16: "F16",
    bfloat16: "BF16",
    int64: "I64",
    bool: "BOOL",
    float64: "F64",
  };
  assert.deepEqual(ckpt.names(), Object.keys(expected));
  for (const [name, e] of Object.entries(expected)) {
    const info = ckpt.info(name);
    assert.equal(info.dtype, dtypes[e.dtype], name);
    assert.deepEqual(info.shape, e.shape, name);
    if (isFloat(ckpt, name)) {
      // The values were written from these very floats: exact equality.
      assert.deepEqual([...ckpt.tensor(name).data], e.values, name);
    } else {
      assert.throws(() => ckpt.tensor(name), WeightsError, name);
    }
  }
  assert.throws(() => ckpt.info("nope"), /no tensor named "nope"; the checkpoint has 13 tensors/);
});

Deno.test("torch .bin: a sharded checkpoint (pytorch_model.bin.index.json) equals tiny-neox", () => {
  const dir = `${TORCH_BIN}tiny-neox-sharded`;
  const index = parseShardIndex(
    Deno.readTextFileSync(`${dir}/pytorch_model.bin.index.json`),
    "pytorch_model.bin.index.json",
  );
  assert.equal(index.shardFiles.length, 2);
  const shards = new Map(
    index.shardFiles.map((f) => [f, readTorchCheckpoint(Deno.readFileSync(`${dir}/${f}`), f)]),
  );
  const source = shardedTensorSource(index, shards);
  const reference = parseSafetensors(
    Deno.readFileSync(`${fixturePath("tiny-neox")}/model.safetensors`),
  );
  assertSameTensors(source, reference);
  // Old Pythia files also carry the causal mask and masked_bias buffers.
  assert.deepEqual(source.info("gpt_neox.layers.1.attention.bias"), {
    dtype: "BOOL",
    shape: [1, 1, 32, 32],
  });
  assert.deepEqual([...source.tensor("gpt_neox.layers.0.attention.masked_bias").data], [-1e9]);
  assert.equal(source.names().length, reference.names().length + 4);
});

Deno.test("torch .bin: the legacy format and pickles that call anything are PickleErrors", () => {
  assert.throws(() => readBin("legacy.bin"), (e: Error) => {
    assert.ok(e instanceof PickleError);
    assert.match(e.message, /^legacy\.bin: this is PyTorch's legacy format/);
    return true;
  });
  const marker = "/tmp/torch-bin-fixture-pwned";
  assert.throws(() => readBin("unsafe.bin"), (e: Error) => {
    assert.ok(e instanceof PickleError);
    assert.match(e.message, /refuses global posix\.system/);
    assert.match(e.message, /nothing was run/);
    return true;
  });
  assert.throws(() => Deno.statSync(marker), Deno.errors.NotFound);

  const refused: Array<[Uint8Array, RegExp]> = [
    [pickle(op.proto(), op.global("builtins", "eval"), op.stop()), /refuses global builtins\.eval/],
    // STACK_GLOBAL (protocol 4) reaches globals by a second road: refused the same way.
    [
      pickle(op.proto(4), op.str("os"), op.str("system"), [0x93], op.stop()),
      /refuses global os\.system/,
    ],
    [
      pickle(
        op.proto(),
        op.global("torch", "FloatStorage"),
        op.emptyTuple(),
        op.reduce(),
        op.stop(),
      ),
      /torch\.FloatStorage, which is not callable|REDUCE calls/,
    ],
    [pickle(op.proto(), op.emptyTuple(), [0x81], op.stop()), /opcode NEWOBJ is not allowed/],
    [pickle(op.proto(), [0x69], op.stop()), /opcode INST is not allowed/],
    [pickle(op.proto(), [0xff]), /unknown opcode 0xff/],
    [pickle(op.proto(), op.str("x")), /truncated/],
    [
      pickle(op.proto(), [0x58, 0xff, 0xff, 0xff, 0x7f]),
      /needs 2147483647 bytes but only 0 remain/,
    ],
    [pickle(op.proto(), [0x68, 7], op.stop()), /memo slot 7, which was never stored/],
    [pickle(op.proto(), op.int(1), op.stop()), /holds 1, not a state dict/],
    [
      pickle(op.proto(), op.emptyDict(), op.str("step"), op.int(3), [0x73], op.stop()),
      /entry "step" is 3, not a tensor/,
    ],
    [
      pickle(op.proto(), op.emptyDict(), op.str("model"), op.emptyDict(), [0x73], op.stop()),
      /a training checkpoint\?/,
    ],
  ];
  for (const [pkl, pattern] of refused) {
    assert.throws(() => readTorchCheckpoint(torchArchive(pkl, {}), "x.bin"), (e: Error) => {
      assert.ok(e instanceof PickleError, `${e}`);
      assert.match(e.message, pattern);
      assert.match(e.message, /^x\.bin/);
      return true;
    });
  }
});

Deno.test("torch .bin: forged views and storages are refused before any allocation", () => {
  const four = new Uint8Array(16); // 4 float32 elements
  const tensor = (v: Parameters<typeof rebuildOps>[0]) =>
    torchArchive(stateDictPickle([["w", rebuildOps(v)]]), { "0": four });
  const ok = readTorchCheckpoint(tensor({ numel: 4, size: [2, 2], stride: [2, 1] }));
  assert.deepEqual(ok.tensor("w").shape, [2, 2]);
  const cases: Array<[Uint8Array, RegExp]> = [
    [
      tensor({ numel: 5, size: [5], stride: [1] }),
      /holds 16 bytes, but the pickle says 5 elements/,
    ],
    [tensor({ numel: 4, size: [2, 2], stride: [2, 1], offset: 1 }), /reaches element 4 of storage/],
    [
      tensor({ numel: 4, size: [2 ** 30, 2 ** 20], stride: [0, 0] }),
      /more elements than its storage/,
    ],
    [tensor({ numel: 4, size: [3], stride: [2] }), /reaches element 4/],
    [tensor({ numel: 4, size: [2], stride: [1, 1] }), /size and stride differ/],
    [tensor({ numel: 4, size: [-1], stride: [1] }), /non-negative integers/],
    [tensor({ numel: 4, key: "../x", size: [4], stride: [1] }), /not a short name/],
    [
      tensor({ numel: 4, key: "1", size: [4], stride: [1] }),
      /refers to storage "archive\/data\/1", which is absent/,
    ],
  ];
  for (const [bytes, pattern] of cases) {
    assert.throws(() => readTorchCheckpoint(bytes), (e: Error) => {
      assert.ok(e instanceof PickleError, `${e}`);
      assert.match(e.message, pattern);
      return true;
    });
  }
  // Same byte count, another dtype: reads, and tensor() refuses the integers with WeightsError.
  const ints = readTorchCheckpoint(
    tensor({ numel: 4, storageType: "IntStorage", size: [4], stride: [1] }),
  );
  assert.equal(ints.info("w").dtype, "I32");
  assert.throws(() => ints.tensor("w"), WeightsError);
  // An element count past 2^53 (LONG1) stays an integer and is refused, not rounded.
  const longSize = stateDictPickle([[
    "w",
    pickle(
      op.global("torch._utils", "_rebuild_tensor_v2"),
      op.mark(),
      op.mark(),
      op.str("storage"),
      op.global("torch", "FloatStorage"),
      op.str("0"),
      op.str("cpu"),
      op.long(1n << 62n),
      op.tuple(),
      op.binpersid(),
    ),
  ]]);
  assert.throws(() => readTorchCheckpoint(torchArchive(longSize, { "0": four })), PickleError);
});

Deno.test("zip: ZIP64 records, compressed and corrupt entries, big-endian storages", () => {
  const views = Deno.readFileSync(`${TORCH_BIN}views.bin`);
  const entries = zipEntries(readZip(views, "views.bin"));
  const reference = readTorchCheckpoint(views);
  assertSameTensors(readTorchCheckpoint(writeZip(entries, { zip64: true }), "z64.bin"), reference);

  const expectError = (bytes: Uint8Array, pattern: RegExp) =>
    assert.throws(() => {
      const ckpt = readTorchCheckpoint(bytes, "bad.bin");
      for (const name of ckpt.names()) if (isFloat(ckpt, name)) ckpt.tensor(name);
    }, (e: Error) => {
      assert.ok(e instanceof PickleError, `${e}`);
      assert.match(e.message, pattern);
      return true;
    });
  expectError(writeZip(entries, { method: 8 }), /is compressed \(method 8\)/);
  const flipped = views.slice();
  flipped[readZip(views).read("views/data/0").byteOffset + 5] ^= 1;
  expectError(flipped, /"views\/data\/0" fails its CRC-32 check/);
  expectError(
    writeZip([...entries, ["views/byteorder", new TextEncoder().encode("big")]]),
    /"big"-endian/,
  );
  expectError(
    writeZip(entries.filter(([n]) => !n.endsWith("data.pkl"))),
    /no \{prefix\}\/data\.pkl/,
  );
  expectError(writeZip([...entries, entries[1]]), /two entries named "views\/data\/0"/);
  expectError(views.subarray(0, views.length - 5), /not a zip archive/);
  expectError(new Uint8Array([1, 2, 3]), /does not start like a zip archive/);
  expectError(new Uint8Array(0), /does not start like a zip archive/);
});
