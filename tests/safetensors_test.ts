/**
 * Tests of the safetensors reader and writer, the f16/bf16 conversions, and the synthetic GPT-2
 * checkpoints.
 * @module
 */
import assert from "node:assert/strict";
import { ConfigError, SafetensorsError } from "../core/errors.ts";
import {
  bf16BitsToF32,
  decodeFloats,
  encodeFloats,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  type FloatDtype,
} from "../core/dtype.ts";
import {
  MAX_HEADER_BYTES,
  parseSafetensors,
  type SafetensorsFile,
  writeSafetensors,
} from "../io/safetensors.ts";
import { SeededRng } from "../core/rng.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";
import type { Tensor } from "../core/tensor.ts";
import { fixturePath } from "./fixtures.ts";

const enc = new TextEncoder();

/** Builds a file from a header text, a data area, and optionally a forged header length. */
function build(header: string, data: Uint8Array | number = 0, length?: bigint): Uint8Array {
  const json = enc.encode(header);
  const body = typeof data === "number" ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + json.length + body.length);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(body, 8 + json.length);
  return out;
}

/** Builds a header of tensors from [name, dtype, shape, begin, end] rows. */
function headerOf(rows: [string, string, unknown[], number, number][]): string {
  const obj: Record<string, unknown> = {};
  for (const [name, dtype, shape, b, e] of rows) obj[name] = { dtype, shape, data_offsets: [b, e] };
  return JSON.stringify(obj);
}

function throwsSafetensors(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected a SafetensorsError, got ${e}`);
    for (const f of fragments) {
      assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks "${f}"`);
    }
    return true;
  });
}

function readFixture(dir: string): SafetensorsFile {
  const path = `${fixturePath(dir)}/model.safetensors`;
  return parseSafetensors(Deno.readFileSync(path), `${dir}/model.safetensors`);
}

function bitsOf(x: number): number {
  return new Uint32Array(new Float32Array([x]).buffer)[0];
}

// ---------------------------------------------------------------- dtype conversions

Deno.test("f16: exact values, subnormals, infinities, NaN and signed zeros", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2.5, 0xc100],
    [0.15625, 0x3100],
    [65504, 0x7bff], // largest finite
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -14 - 2 ** -24, 0x03ff], // largest subnormal
    [-(2 ** -24), 0x8001],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
  ];
  for (const [value, bits] of cases) {
    assert.equal(f32ToF16Bits(value), bits, `f32ToF16Bits(${value})`);
    assert.ok(Object.is(f16BitsToF32(bits), value), `f16BitsToF32(0x${bits.toString(16)})`);
  }
  assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN))));
  assert.ok(Number.isNaN(f16BitsToF32(0x7c01)));
  assert.ok(Number.isNaN(f16BitsToF32(0xfe00)));
});

Deno.test("f16: rounding to nearest, ties to even, overflow and underflow", () => {
  const cases: [number, number][] = [
    [1 + 2 ** -11, 0x3c00], // tie between 1 and 1+2^-10: even is 1
    [1 + 3 * 2 ** -11, 0x3c02], // tie between 1+2^-10 and 1+2^-9: even is 1+2^-9
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie
    [65519, 0x7bff], // below the tie with infinity
    [65520, 0x7c00], // the tie rounds to even: infinity
    [1e6, 0x7c00],
    [-1e6, 0xfc00],
    [2 ** -25, 0x0000], // tie between 0 and the smallest subnormal: even is 0
    [-(2 ** -25), 0x8000],
    [3 * 2 ** -26, 0x0001], // above the tie
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 subnormal units: even is 2
    [5 * 2 ** -25, 0x0002], // tie between 2 and 3 units: even is 2
    [2 ** -14 - 2 ** -25, 0x0400], // tie between largest subnormal and smallest normal: even
    [1e-10, 0x0000],
    [2 ** -149, 0x0000], // float32 subnormal
  ];
  for (const [value, bits] of cases) {
    assert.equal(f32ToF16Bits(value), bits, `f32ToF16Bits(${value}) = 0x${bits.toString(16)}`);
  }
});

Deno.test("bf16: exact values, rounding ties to even, specials", () => {
  const cases: [number, number][] = [
    [1, 0x3f80],
    [-0, 0x8000],
    [0, 0x0000],
    [-2.5, 0xc020],
    [Infinity, 0x7f80],
    [-Infinity, 0xff80],
    [2 ** -133, 0x0001], // bf16 subnormal (float32 subnormal)
    [1 + 2 ** -8, 0x3f80], // tie: even is 1
    [1 + 3 * 2 ** -8, 0x3f82], // tie: even is 1+2^-6
    [1 + 2 ** -8 + 2 ** -20, 0x3f81],
    [3.4028234663852886e38, 0x7f80], // float32 max rounds up to infinity
  ];
  for (const [value, bits] of cases) {
    assert.equal(f32ToBf16Bits(value), bits, `f32ToBf16Bits(${value})`);
  }
  for (const bits of [0x3f80, 0x8000, 0xc020, 0x7f80, 0xff80, 0x0001, 0x3f81]) {
    assert.equal(f32ToBf16Bits(bf16BitsToF32(bits)), bits);
  }
  assert.ok(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN))));
  // A NaN whose payload lives only in the low 16 bits must stay NaN, not become infinity.
  const lowPayloadNaN = new Float32Array(new Uint32Array([0x7f800001]).buffer)[0];
  assert.ok(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(lowPayloadNaN))));
});

Deno.test("f16 and bf16: every bit pattern widens and narrows back to itself", () => {
  const all = new Uint8Array(65536 * 2);
  for (let h = 0; h < 65536; h++) {
    all[2 * h] = h & 0xff;
    all[2 * h + 1] = h >>> 8;
  }
  for (const dtype of ["F16", "BF16"] as const) {
    const wide = new Float32Array(65536);
    decodeFloats(dtype, all, wide);
    const back = new Uint8Array(all.length);
    encodeFloats(dtype, wide, back);
    for (let h = 0; h < 65536; h++) {
      const got = back[2 * h] | (back[2 * h + 1] << 8);
      if (Number.isNaN(wide[h])) {
        const expMask = dtype === "F16" ? 0x7c00 : 0x7f80;
        assert.ok((got & expMask) === expMask && (got & ~expMask & 0x7fff) !== 0, `${dtype} NaN`);
      } else {
        assert.equal(got, h, `${dtype} 0x${h.toString(16)}`);
        const single = dtype === "F16" ? f16BitsToF32(h) : bf16BitsToF32(h);
        assert.ok(Object.is(single, wide[h]));
      }
    }
  }
});

// ---------------------------------------------------------------- writer and round trips

const SPECIALS = [0, -0, 1, -1, 0.5, 2 ** -14, 2 ** -24, 65504, -65504, Infinity, -Infinity, NaN];

for (const dtype of ["F32", "F16", "BF16"] as const) {
  Deno.test(`round trip ${dtype}: representable values come back exactly`, () => {
    const values = dtype === "BF16"
      ? [0, -0, 1, -1, 0.5, 2 ** -133, 3.125, -1024, 2 ** 100, Infinity, -Infinity, NaN]
      : SPECIALS;
    const tensors: Record<string, Tensor> = {
      "specials": { data: new Float32Array(values), shape: [2, values.length / 2] },
      "scalar": { data: new Float32Array([3]), shape: [] },
      "empty": { data: new Float32Array(0), shape: [4, 0, 2] },
      "odd": { data: new Float32Array([1.5, -2.25, 8]), shape: [3] },
    };
    const bytes = writeSafetensors(tensors, { dtype, metadata: { format: "pt" } });
    const file = parseSafetensors(bytes);
    assert.deepEqual(file.names(), ["specials", "scalar", "empty", "odd"]);
    assert.deepEqual(file.metadata, { format: "pt" });
    for (const [name, t] of Object.entries(tensors)) {
      const got = file.tensor(name);
      assert.deepEqual(got.shape, t.shape);
      assert.equal(got.data.length, t.data.length);
      for (let i = 0; i < t.data.length; i++) {
        assert.ok(Object.is(got.data[i], t.data[i]), `${name}[${i}]: ${got.data[i]}`);
      }
      assert.equal(file.info(name).dtype, dtype);
    }
    assert.equal(file.headerLength % 8, 0);
  });
}

Deno.test("writer: F32 values are stored bit-exactly, F16/BF16 values rounded to nearest even", () => {
  const rng = new SeededRng(3);
  const data = new Float32Array(1000);
  rng.fillNormal(data, 0, 3);
  data[0] = 1 + 2 ** -11; // an f16 tie
  data[1] = 1 + 2 ** -8; // a bf16 tie
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    const got = parseSafetensors(writeSafetensors({ x: { data, shape: [1000] } }, { dtype }))
      .tensor("x").data;
    for (let i = 0; i < data.length; i++) {
      const expected = dtype === "F32"
        ? data[i]
        : dtype === "F16"
        ? f16BitsToF32(f32ToF16Bits(data[i]))
        : bf16BitsToF32(f32ToBf16Bits(data[i]));
      assert.equal(bitsOf(got[i]), bitsOf(expected));
    }
  }
});

Deno.test("writer: official byte layout (header length, JSON, space padding, data)", () => {
  const data = new Float32Array([0, 1, 2, 3, 4, 5]);
  const bytes = writeSafetensors([["attn.0", { data, shape: [1, 2, 3] }]]);
  const json = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
  assert.equal(json.length, 64);
  const expected = build(json, new Uint8Array(data.buffer));
  assert.deepEqual(bytes, expected);

  const padded = writeSafetensors([["attn0", { data, shape: [1, 1, 2, 3] }]]);
  const text = '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}';
  assert.equal(padded.length, 8 + 72 + 24);
  assert.equal(new DataView(padded.buffer).getUint32(0, true), 72);
  assert.equal(new TextDecoder().decode(padded.subarray(8, 80)), text + " ".repeat(72 - 65));

  const empty = writeSafetensors({});
  assert.deepEqual([...empty], [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
  assert.deepEqual(parseSafetensors(empty).names(), []);
});

Deno.test("writer: order given is kept, even for integer-like names", () => {
  const t = (v: number): Tensor => ({ data: new Float32Array([v]), shape: [1] });
  const file = parseSafetensors(writeSafetensors([["b", t(1)], ["10", t(2)], ["a", t(3)]]));
  assert.deepEqual(file.names(), ["b", "10", "a"]);
  assert.deepEqual([...file.tensor("10").data], [2]);
});

Deno.test("writer: rejects inconsistent input with SafetensorsError", () => {
  const one: Tensor = { data: new Float32Array(1), shape: [1] };
  throwsSafetensors(
    () => writeSafetensors({ x: { data: new Float32Array(3), shape: [2, 2] } }),
    "needs 4 float32 values, got 3",
  );
  throwsSafetensors(() => writeSafetensors([["x", one], ["x", one]]), "twice");
  throwsSafetensors(() => writeSafetensors([["__metadata__", one]]), "reserved");
  throwsSafetensors(
    () => writeSafetensors({ x: { data: new Float32Array(0), shape: [-1] } }),
    "non-negative",
  );
});

// ---------------------------------------------------------------- reading

Deno.test("reader: F32 data at unaligned addresses is read correctly", () => {
  const values = new Float32Array([1.5, -2, 3.25, 1e-30]);
  // A 3-byte header puts the data at offset 11, not a multiple of 4.
  const header = headerOf([["x", "F32", [4], 0, 16]]);
  const odd = build(header, new Uint8Array(values.buffer));
  assert.notEqual((8 + enc.encode(header).length) % 4, 0);
  assert.deepEqual([...parseSafetensors(odd).tensor("x").data], [...values]);
  // The whole file at byte offset 1 of a larger buffer.
  const written = writeSafetensors({ x: { data: values, shape: [2, 2] } });
  const shifted = new Uint8Array(written.length + 1);
  shifted.set(written, 1);
  const file = parseSafetensors(shifted.subarray(1));
  assert.deepEqual([...file.tensor("x").data], [...values]);
  const f16 = writeSafetensors({ x: { data: values, shape: [4] } }, { dtype: "F16" });
  const shifted16 = new Uint8Array(f16.length + 1);
  shifted16.set(f16, 1);
  assert.deepEqual([...parseSafetensors(shifted16.subarray(1)).tensor("x").data], [
    1.5,
    -2,
    3.25,
    0,
  ]);
});

Deno.test("reader: tensor() returns fresh copies; info() and rawBytes() describe the bytes", () => {
  const bytes = writeSafetensors({ x: { data: new Float32Array([1, 2]), shape: [2] } });
  const file = parseSafetensors(bytes);
  const a = file.tensor("x");
  a.data[0] = 99;
  a.shape.push(7);
  assert.deepEqual(file.tensor("x"), { data: new Float32Array([1, 2]), shape: [2] });
  const info = file.info("x");
  assert.deepEqual(info, { dtype: "F32", shape: [2], byteOffset: file.dataOffset, byteLength: 8 });
  assert.equal(file.rawBytes("x").length, 8);
  assert.equal(file.rawBytes("x").buffer, bytes.buffer);
  assert.ok(file.has("x"));
  assert.ok(!file.has("y"));
});

Deno.test("reader: unknown names list what the file has and suggest the prefix", () => {
  const file = readFixture("tiny-hf-f32");
  throwsSafetensors(
    () => file.tensor("wte.weight"),
    "tiny-hf-f32/model.safetensors",
    'no tensor named "wte.weight"',
    'did you mean "transformer.wte.weight"',
    "28 tensors",
  );
  throwsSafetensors(() => file.info("nope"), '"nope"', "transformer.h.0.attn.c_attn.bias");
  const empty = parseSafetensors(writeSafetensors({}), "e.safetensors");
  throwsSafetensors(() => empty.tensor("x"), "e.safetensors", "no tensors");
});

Deno.test("reader: non-float dtypes parse, but reading them is a clear error", () => {
  const header = headerOf([
    ["ids", "I64", [2], 0, 16],
    ["mask", "BOOL", [3], 16, 19],
    ["w", "F32", [1], 19, 23],
  ]);
  const file = parseSafetensors(build(header, 23), "mixed.safetensors");
  assert.equal(file.info("ids").dtype, "I64");
  assert.deepEqual([...file.tensor("w").data], [0]);
  throwsSafetensors(
    () => file.tensor("ids"),
    "mixed.safetensors",
    '"ids"',
    "unsupported dtype I64",
  );
  throwsSafetensors(() => file.tensor("mask"), "unsupported dtype BOOL");
});

Deno.test("reader: edge cases the official implementation accepts", () => {
  // Whitespace padding after (and before) the JSON, as serde_json allows.
  assert.deepEqual(parseSafetensors(build("{}\r \t\n")).names(), []);
  assert.deepEqual(parseSafetensors(build(" \n{}")).names(), []);
  // Empty shapes (scalars) and zero-sized tensors.
  const header = headerOf([["s", "F32", [], 0, 4], ["z", "F16", [2, 0], 4, 4]]);
  const file = parseSafetensors(build(header, 4));
  assert.deepEqual(file.tensor("s"), { data: new Float32Array(1), shape: [] });
  assert.deepEqual(file.tensor("z"), { data: new Float32Array(0), shape: [2, 0] });
  // Tensors listed in any order; __metadata__ null; unknown extra fields ignored.
  const shuffled = JSON.stringify({
    b: { dtype: "F32", shape: [1], data_offsets: [4, 8], extra: 1 },
    __metadata__: null,
    a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
  });
  const f2 = parseSafetensors(build(shuffled, 8));
  assert.deepEqual(f2.names(), ["a", "b"]);
  assert.deepEqual(f2.metadata, {});
});

// ---------------------------------------------------------------- malformed files

Deno.test("malformed: header length and header text", () => {
  const ok = headerOf([["x", "F32", [2], 0, 8]]);
  throwsSafetensors(
    () => parseSafetensors(new Uint8Array(3), "a.st"),
    "a.st",
    "3 bytes",
    "truncated",
  );
  throwsSafetensors(() => parseSafetensors(new Uint8Array(0)), "model.safetensors", "0 bytes");
  throwsSafetensors(
    () => parseSafetensors(build(ok, 8, 100_000n), "b.st"),
    "b.st",
    "100000 bytes",
    "looks truncated",
    "re-download",
  );
  throwsSafetensors(
    () => parseSafetensors(build(ok, 8, BigInt(MAX_HEADER_BYTES + 1))),
    `over the ${MAX_HEADER_BYTES}-byte limit`,
  );
  throwsSafetensors(() => parseSafetensors(build(ok, 8, 2n ** 64n - 1n)), "byte limit");
  const badUtf8 = build(ok, 8);
  badUtf8[9] = 0xff;
  throwsSafetensors(() => parseSafetensors(badUtf8), "not valid UTF-8");
  throwsSafetensors(() => parseSafetensors(build("{", 0)), "not valid JSON");
  throwsSafetensors(() => parseSafetensors(build("{}\0\0", 0)), "not valid JSON");
  throwsSafetensors(() => parseSafetensors(build("\ufeff{}", 0)), "not valid JSON");
  throwsSafetensors(() => parseSafetensors(build("[1, 2]", 0)), "must be a JSON object", "array");
  throwsSafetensors(() => parseSafetensors(build("42", 0)), "must be a JSON object", "42");
  throwsSafetensors(() => parseSafetensors(build("null", 0)), "must be a JSON object", "null");
});

Deno.test("malformed: metadata and tensor entries", () => {
  const bad = (header: string, data: number, ...fragments: string[]) =>
    throwsSafetensors(() => parseSafetensors(build(header, data), "m.st"), "m.st", ...fragments);
  bad('{"__metadata__":{"format":1}}', 0, '__metadata__ entry "format" must be a string');
  bad('{"__metadata__":"pt"}', 0, "__metadata__ must be an object");
  bad('{"x":[1]}', 0, 'tensor "x" must be described by an object');
  bad('{"x":{"shape":[1],"data_offsets":[0,4]}}', 4, 'tensor "x" is missing its "dtype" field');
  bad('{"x":{"dtype":"F32","data_offsets":[0,4]}}', 4, 'missing its "shape" field');
  bad('{"x":{"dtype":"F32","shape":[1]}}', 4, 'missing its "data_offsets" field');
  bad(headerOf([["x", "Q8", [1], 0, 1]]), 1, 'tensor "x" has unknown dtype "Q8"');
  bad(headerOf([["x", "f32", [1], 0, 4]]), 4, 'unknown dtype "f32"');
  bad('{"x":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}', 4, "dtype must be a string");
  bad(headerOf([["x", "F32", [-1], 0, 4]]), 4, 'tensor "x"', "non-negative integers", "-1");
  bad(headerOf([["x", "F32", [1.5], 0, 4]]), 4, "non-negative integers", "1.5");
  bad(headerOf([["x", "F32", ["2"], 0, 8]]), 8, "non-negative integers");
  bad('{"x":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}', 8, "shape must be an array");
  bad('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0]}}', 8, "data_offsets must be an array");
  bad(headerOf([["x", "F32", [2], -8, 0]]), 8, "data_offsets must be non-negative");
  bad(headerOf([["x", "F32", [2], 8, 0]]), 8, "end before they begin");
  bad(headerOf([["x", "F32", [2, 2], 0, 8]]), 8, 'tensor "x"', "needs 16 bytes", "span 8");
  bad(headerOf([["x", "F16", [3], 0, 4]]), 4, "needs 6 bytes");
  bad(headerOf([["x", "F32", [2 ** 40, 2 ** 40], 0, 8]]), 8, "64-bit");
  bad(headerOf([["x", "F32", [2 ** 31, 2 ** 31], 0, 8]]), 8, "needs 1.845e+19 bytes");
  bad(headerOf([["x", "F4", [3], 0, 2]]), 2, "whole number of bytes");
  bad('{"x\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4, "surrogate");
});

Deno.test("malformed: shapes and offsets written as floats are refused, as serde_json does", () => {
  const bad = (shape: string, offsets: string, ...fragments: string[]) =>
    throwsSafetensors(
      () =>
        parseSafetensors(
          build(`{"x":{"dtype":"F32","shape":${shape},"data_offsets":${offsets}}}`, 4),
          "m.st",
        ),
      'm.st: tensor "x"',
      ...fragments,
    );
  bad("[1.0]", "[0,4]", "shape must hold non-negative integers", "the float 1.0");
  bad("[1e0]", "[0,4]", "the float 1e0");
  bad("[1E0]", "[0,4]", "the float 1E0");
  bad("[-0]", "[0,4]", "the float -0");
  bad("[1]", "[0,4.0]", "data_offsets must be non-negative integers", "the float 4.0");
  bad("[1]", "[0e5,4]", "the float 0e5");
  bad("[1]", "[0,4e0]", "the float 4e0");
  // Each verdict above and below is safetensors 0.8.0's (deserialize): integers are fine, and so
  // are floats in extra fields it ignores.
  const ok = '{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1.5}}';
  assert.deepEqual(parseSafetensors(build(ok, 4)).info("x").shape, [1]);
});

Deno.test("malformed: offsets that overlap, leave gaps, leave the data area, or dangle", () => {
  const bad = (rows: [string, string, number[], number, number][], data: number, ...f: string[]) =>
    throwsSafetensors(() => parseSafetensors(build(headerOf(rows), data), "o.st"), "o.st", ...f);
  bad(
    [["a", "F32", [2], 0, 8], ["b", "F32", [2], 4, 12]],
    12,
    'tensor "b"',
    'overlap tensor "a"',
  );
  bad([["a", "F32", [2], 0, 8], ["b", "F32", [2], 0, 8]], 8, "overlap");
  bad(
    [["a", "F32", [2], 0, 8], ["b", "F32", [1], 12, 16]],
    16,
    'tensor "b"',
    "gap of 4 bytes",
    'after tensor "a"',
  );
  bad([["a", "F32", [1], 4, 8]], 8, "gap of 4 bytes after the start of the data area");
  bad([["a", "F32", [1], 0, 4], ["b", "F32", [1], 100, 104]], 8, 'tensor "b"', "outside the data");
  bad([["a", "F32", [2], 0, 8]], 12, "4 dangling bytes after the last tensor");
  bad(
    [["a", "F32", [2], 0, 8], ["b", "F32", [4], 8, 24]],
    15,
    "describes 24 bytes of tensor data but only 15",
    'tensor "b" is cut off at byte 7 of 16',
    "looks truncated",
    "re-download",
  );
});

Deno.test("malformed: a real file truncated anywhere fails cleanly", () => {
  const bytes = Deno.readFileSync(`${fixturePath("tiny-hf-f16")}/model.safetensors`);
  for (const cut of [0, 5, 8, 100, 2567, 2568, 2569, 40000, bytes.length - 1]) {
    throwsSafetensors(() => parseSafetensors(bytes.subarray(0, cut), "t.st"), "t.st");
  }
  throwsSafetensors(
    () => parseSafetensors(bytes.subarray(0, bytes.length - 1)),
    'tensor "transformer.wte.weight" is cut off',
    "looks truncated",
  );
  const longer = new Uint8Array(bytes.length + 3);
  longer.set(bytes);
  throwsSafetensors(() => parseSafetensors(longer), "3 dangling bytes");
});

// ---------------------------------------------------------------- reference fixtures

Deno.test("fixtures: the four tiny HF files parse with the expected names and shapes", () => {
  const f32 = readFixture("tiny-hf-f32");
  assert.equal(f32.names().length, 28);
  assert.deepEqual(f32.metadata, { format: "pt" });
  assert.deepEqual(f32.info("transformer.h.1.attn.c_attn.weight").shape, [32, 96]);
  assert.deepEqual(f32.info("transformer.h.0.mlp.c_proj.weight").shape, [128, 32]);
  assert.deepEqual(f32.info("transformer.wte.weight").shape, [96, 32]);
  assert.ok(!f32.has("lm_head.weight"));
  for (const name of f32.names()) assert.equal(f32.info(name).dtype, "F32");

  const official = readFixture("tiny-official-layout");
  assert.equal(official.names().length, 30);
  const mask = official.tensor("h.0.attn.bias");
  assert.deepEqual(mask.shape, [1, 1, 32, 32]);
  for (let q = 0; q < 32; q++) {
    for (let k = 0; k < 32; k++) assert.equal(mask.data[q * 32 + k], k <= q ? 1 : 0);
  }
  for (const name of f32.names()) {
    const short = name.slice("transformer.".length);
    assert.deepEqual(official.tensor(short), f32.tensor(name), short);
  }
});

Deno.test("fixtures: f16 and bf16 weights equal f32's within their rounding", () => {
  const f32 = readFixture("tiny-hf-f32");
  for (
    const [dir, dtype, rel, tiny] of [
      ["tiny-hf-f16", "F16", 2 ** -11, 2 ** -25],
      ["tiny-hf-bf16", "BF16", 2 ** -8, 0],
    ] as const
  ) {
    const file = readFixture(dir);
    assert.deepEqual(file.names(), f32.names());
    for (const name of file.names()) {
      assert.equal(file.info(name).dtype, dtype);
      const a = file.tensor(name);
      const b = f32.tensor(name);
      assert.deepEqual(a.shape, b.shape);
      for (let i = 0; i < b.data.length; i++) {
        const err = Math.abs(a.data[i] - b.data[i]);
        assert.ok(
          err <= rel * Math.abs(b.data[i]) + tiny,
          `${dir} ${name}[${i}]: ${a.data[i]} vs ${b.data[i]}`,
        );
      }
    }
  }
});

Deno.test("fixtures: re-writing a fixture reproduces its tensors", () => {
  const f16 = readFixture("tiny-hf-f16");
  const tensors = f16.names().map((n) => [n, f16.tensor(n)] as [string, Tensor]);
  const again = parseSafetensors(writeSafetensors(tensors, { dtype: "F16" }));
  for (const name of f16.names()) {
    assert.deepEqual(again.rawBytes(name), f16.rawBytes(name));
  }
});

// ---------------------------------------------------------------- synthetic checkpoints

function gpt2Names(nLayers: number, official: boolean): string[] {
  const names = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"];
  for (let l = 0; l < nLayers; l++) {
    for (
      const s of [
        "ln_1.weight",
        "ln_1.bias",
        "attn.c_attn.weight",
        "attn.c_attn.bias",
        "attn.c_proj.weight",
        "attn.c_proj.bias",
        "ln_2.weight",
        "ln_2.bias",
        "mlp.c_fc.weight",
        "mlp.c_fc.bias",
        "mlp.c_proj.weight",
        "mlp.c_proj.bias",
        ...(official ? ["attn.bias"] : []),
      ]
    ) names.push(`h.${l}.${s}`);
  }
  return names.sort();
}

Deno.test("synthetic: HF names, shapes and config in both layouts", () => {
  const opts = { nLayers: 2, nHeads: 4, dModel: 32, dVocab: 96, nCtx: 32, seed: 1 };
  const official = syntheticGpt2(opts);
  const file = parseSafetensors(official.weights);
  assert.deepEqual(file.names(), gpt2Names(2, true));
  assert.deepEqual(file.metadata, { format: "pt" });
  const shapes: Record<string, number[]> = {
    "wte.weight": [96, 32],
    "wpe.weight": [32, 32],
    "h.1.ln_1.weight": [32],
    "h.1.attn.bias": [1, 1, 32, 32],
    "h.1.attn.c_attn.weight": [32, 96],
    "h.1.attn.c_attn.bias": [96],
    "h.1.attn.c_proj.weight": [32, 32],
    "h.1.mlp.c_fc.weight": [32, 128],
    "h.1.mlp.c_fc.bias": [128],
    "h.1.mlp.c_proj.weight": [128, 32],
    "ln_f.bias": [32],
  };
  for (const [name, shape] of Object.entries(shapes)) {
    assert.deepEqual(file.info(name).shape, shape);
  }
  const c = official.config;
  assert.equal(c.model_type, "gpt2");
  assert.equal(c.vocab_size, 96);
  assert.equal(c.n_positions, 32);
  assert.equal(c.n_embd, 32);
  assert.equal(c.n_layer, 2);
  assert.equal(c.n_head, 4);
  assert.equal(c.n_inner, null);
  assert.equal(c.activation_function, "gelu_new");
  assert.equal(c.layer_norm_epsilon, 1e-5);
  assert.equal(c.bos_token_id, 95);
  assert.equal(c.eos_token_id, 95);
  assert.equal(c.tie_word_embeddings, true);
  assert.equal(c.dtype, "float32");

  const prefixed = syntheticGpt2({ ...opts, layout: "prefixed", dMlp: 48, dtype: "BF16" });
  const pf = parseSafetensors(prefixed.weights);
  assert.deepEqual(pf.names(), gpt2Names(2, false).map((n) => `transformer.${n}`));
  assert.deepEqual(pf.info("transformer.h.0.mlp.c_fc.weight").shape, [32, 48]);
  assert.equal(prefixed.config.n_inner, 48);
  assert.equal(prefixed.config.dtype, "bfloat16");
  // Same values in both layouts (bf16-rounded here).
  for (const name of gpt2Names(2, false).filter((n) => !n.includes("mlp"))) {
    const a = file.tensor(name).data;
    const b = pf.tensor(`transformer.${name}`).data;
    for (let i = 0; i < a.length; i++) assert.equal(b[i], bf16BitsToF32(f32ToBf16Bits(a[i])));
  }
});

Deno.test("synthetic: seeded, deterministic, with plausible weight statistics", () => {
  const opts = { nLayers: 1, nHeads: 2, dModel: 64, dVocab: 500, nCtx: 16, seed: 42 };
  const a = syntheticGpt2(opts).weights;
  assert.deepEqual(syntheticGpt2(opts).weights, a);
  const other = syntheticGpt2({ ...opts, seed: 43 }).weights;
  assert.equal(other.length, a.length);
  assert.notDeepEqual(other, a);
  const file = parseSafetensors(a);
  const stats = (name: string) => {
    const d = file.tensor(name).data;
    let s = 0, s2 = 0;
    for (const x of d) {
      s += x;
      s2 += x * x;
    }
    const mean = s / d.length;
    return { mean, std: Math.sqrt(s2 / d.length - mean * mean) };
  };
  const wte = stats("wte.weight");
  assert.ok(Math.abs(wte.mean) < 0.001 && Math.abs(wte.std - 0.02) < 0.001, JSON.stringify(wte));
  const ln = stats("h.0.ln_1.weight");
  assert.ok(Math.abs(ln.mean - 1) < 0.01 && ln.std > 0.01 && ln.std < 0.03, JSON.stringify(ln));
  const bias = stats("h.0.attn.c_attn.bias");
  assert.ok(Math.abs(bias.mean) < 0.01 && bias.std > 0.01, JSON.stringify(bias));
  const wide = parseSafetensors(syntheticGpt2({ ...opts, std: 0.5 }).weights).tensor("wte.weight");
  assert.ok(Math.abs(wide.data.reduce((m, x) => Math.max(m, Math.abs(x)), 0)) > 1);
});

for (const dtype of ["F16", "BF16"] as FloatDtype[]) {
  Deno.test(`synthetic ${dtype}: values are the F32 ones rounded; masks survive chunking`, () => {
    // nCtx 300: the mask (90000 values) spans chunk boundaries in the middle of rows.
    const opts = { nLayers: 1, nHeads: 1, dModel: 8, dVocab: 10, nCtx: 300, seed: 5 };
    const f32 = parseSafetensors(syntheticGpt2(opts).weights);
    const half = parseSafetensors(syntheticGpt2({ ...opts, dtype }).weights);
    const round = dtype === "F16"
      ? (x: number) => f16BitsToF32(f32ToF16Bits(x))
      : (x: number) => bf16BitsToF32(f32ToBf16Bits(x));
    for (const name of f32.names()) {
      const a = f32.tensor(name).data;
      const b = half.tensor(name).data;
      for (let i = 0; i < a.length; i++) assert.equal(b[i], round(a[i]), `${name}[${i}]`);
    }
    const mask = half.tensor("h.0.attn.bias").data;
    for (let q = 0; q < 300; q++) {
      for (let k = 0; k < 300; k++) assert.equal(mask[q * 300 + k], k <= q ? 1 : 0);
    }
  });
}

Deno.test("synthetic: invalid options are ConfigErrors", () => {
  const opts = { nLayers: 1, nHeads: 3, dModel: 32, dVocab: 10, nCtx: 8, seed: 0 };
  assert.throws(() => syntheticGpt2(opts), ConfigError);
  assert.throws(() => syntheticGpt2({ ...opts, nHeads: 4, nLayers: 0 }), ConfigError);
  assert.throws(() => syntheticGpt2({ ...opts, nHeads: 4, std: -1 }), ConfigError);
});

Deno.test("SeededRng: reproducible uniform and normal draws", () => {
  const a = new SeededRng(9, "s");
  const b = new SeededRng(9, "s");
  const c = new SeededRng(9, "t");
  const xs = Array.from({ length: 5 }, () => a.nextU32());
  assert.deepEqual(Array.from({ length: 5 }, () => b.nextU32()), xs);
  assert.notDeepEqual(Array.from({ length: 5 }, () => c.nextU32()), xs);
  const r = new SeededRng(1);
  let s = 0, s2 = 0, over3 = 0;
  const n = 200_000;
  for (let i = 0; i < n; i++) {
    const z = r.normal();
    s += z;
    s2 += z * z;
    if (Math.abs(z) > 3) over3++;
    const u = r.uniform();
    assert.ok(u >= 0 && u < 1);
  }
  assert.ok(Math.abs(s / n) < 0.01);
  assert.ok(Math.abs(s2 / n - 1) < 0.02);
  assert.ok(over3 / n > 0.0015 && over3 / n < 0.004); // 0.0027 for a normal
});
