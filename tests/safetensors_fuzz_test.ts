/**
 * Fuzz test of the safetensors parser: seeded random mutations of valid files (truncations, byte
 * flips, forged header lengths, rewritten offsets, shapes and dtypes, appended bytes). Each
 * mutant must either parse, and then every tensor must read, or fail with a SafetensorsError;
 * anything else (a TypeError, a RangeError from a huge allocation, a hang) is a bug.
 * @module
 */
import assert from "node:assert/strict";
import { SafetensorsError } from "../core/errors.ts";
import { parseSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { SeededRng } from "../core/rng.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";
import { fixturePath } from "./fixtures.ts";

const MUTANTS_PER_BASE = 2000;

interface Parts {
  header: Record<string, unknown>;
  data: Uint8Array;
}

function split(bytes: Uint8Array): Parts {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  return { header, data: bytes.subarray(8 + n) };
}

function join(header: unknown, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const HUGE_NUMBERS = [
  -1,
  0,
  1,
  0.5,
  2 ** 31,
  2 ** 32,
  2 ** 40,
  2 ** 53,
  2 ** 53 + 2,
  2 ** 64,
  1e300,
  -(2 ** 40),
];
const DTYPES = ["F32", "F16", "BF16", "I64", "BOOL", "F4", "F64", "U8", "Q8", "", "f32"];

/** A few odd JSON values to put where numbers, arrays or strings belong. */
function oddValue(rng: SeededRng): unknown {
  const options: unknown[] = [null, true, "7", [], {}, [1, 2, 3], -0, 1.25, "F32", [
    2 ** 40,
    2 ** 40,
  ]];
  return options[rng.int(options.length)];
}

function pick<T>(rng: SeededRng, xs: readonly T[]): T {
  return xs[rng.int(xs.length)];
}

/** One random mutation of a valid file; returns the mutant and a description for failures. */
function mutate(base: Uint8Array, parts: Parts, rng: SeededRng): [Uint8Array, string] {
  const names = Object.keys(parts.header).filter((k) => k !== "__metadata__");
  const clone = () => structuredClone(parts.header) as Record<string, Record<string, unknown>>;
  const kind = rng.int(12);
  switch (kind) {
    case 0: {
      const at = rng.int(base.length);
      return [base.slice(0, at), `truncate at ${at}`];
    }
    case 1: {
      const out = base.slice();
      const headerEnd = Math.min(out.length, 8 + new DataView(out.buffer).getUint32(0, true));
      const flips = 1 + rng.int(4);
      for (let i = 0; i < flips; i++) out[rng.int(headerEnd)] ^= 1 << rng.int(8);
      return [out, `flip ${flips} header bits`];
    }
    case 2: {
      const out = base.slice();
      const headerEnd = Math.min(out.length, 8 + new DataView(out.buffer).getUint32(0, true));
      const count = 1 + rng.int(3);
      const chars = '{}[]",:0123456789-. e\\';
      for (let i = 0; i < count; i++) {
        const at = 8 + rng.int(headerEnd - 8);
        out[at] = rng.uniform() < 0.5 ? rng.int(256) : chars.charCodeAt(rng.int(chars.length));
      }
      return [out, `overwrite ${count} header bytes`];
    }
    case 3: {
      const out = base.slice();
      const view = new DataView(out.buffer);
      const choice = rng.int(4);
      const n = choice === 0
        ? 2n ** 64n - 1n
        : choice === 1
        ? BigInt(rng.nextU32()) << 32n | BigInt(rng.nextU32())
        : choice === 2
        ? BigInt(rng.nextU32())
        : BigInt(Math.max(0, Number(view.getBigUint64(0, true)) + rng.int(33) - 16));
      view.setBigUint64(0, n, true);
      return [out, `header length ${n}`];
    }
    case 4: {
      const h = clone();
      const name = pick(rng, names);
      const [b, e] = h[name].data_offsets as number[];
      const shift = rng.int(17) - 8;
      const options: unknown[] = [
        [b + shift, e + shift],
        [b, e + shift],
        [e, b],
        [pick(rng, HUGE_NUMBERS), pick(rng, HUGE_NUMBERS)],
        [b, pick(rng, HUGE_NUMBERS)],
        [rng.int(parts.data.length + 10), rng.int(parts.data.length + 10)],
        [b],
        oddValue(rng),
      ];
      h[name].data_offsets = pick(rng, options);
      return [join(h, parts.data), `offsets of ${name} = ${JSON.stringify(h[name].data_offsets)}`];
    }
    case 5: {
      const h = clone();
      const name = pick(rng, names);
      const options: unknown[] = [
        [2 ** 40, 2 ** 40],
        [2 ** 53],
        [2 ** 31, 2 ** 31, 2 ** 31],
        [0, 2 ** 60, 2 ** 60],
        [-1],
        [1.5],
        [],
        [0],
        [pick(rng, HUGE_NUMBERS)],
        [rng.int(100), rng.int(100)],
        oddValue(rng),
      ];
      h[name].shape = pick(rng, options);
      return [join(h, parts.data), `shape of ${name} = ${JSON.stringify(h[name].shape)}`];
    }
    case 6: {
      const h = clone();
      const name = pick(rng, names);
      h[name].dtype = rng.uniform() < 0.8 ? pick(rng, DTYPES) : oddValue(rng);
      return [join(h, parts.data), `dtype of ${name} = ${JSON.stringify(h[name].dtype)}`];
    }
    case 7: {
      // A consistent rewrite: shape and offsets agree, so the file may well be valid.
      const h = clone();
      const name = pick(rng, names);
      const [b, e] = h[name].data_offsets as number[];
      const [dtype, size] = pick(
        rng,
        [["F32", 4], ["F16", 2], ["BF16", 2], ["U8", 1], ["I64", 8]] as const,
      );
      h[name].dtype = dtype;
      h[name].shape = (e - b) % size === 0 ? [(e - b) / size] : [e - b];
      return [join(h, parts.data), `retype ${name} as ${dtype}`];
    }
    case 8: {
      const h = clone();
      const name = pick(rng, names);
      const field = pick(rng, ["dtype", "shape", "data_offsets"]);
      delete h[name][field];
      if (rng.uniform() < 0.3) (h as Record<string, unknown>)[name] = oddValue(rng);
      return [join(h, parts.data), `remove ${field} of ${name}`];
    }
    case 9: {
      const h = clone() as Record<string, unknown>;
      h.__metadata__ = rng.uniform() < 0.5 ? { format: oddValue(rng) } : oddValue(rng);
      return [join(h, parts.data), `metadata ${JSON.stringify(h.__metadata__)}`];
    }
    case 10: {
      const extra = new Uint8Array(1 + rng.int(64)).map(() => rng.int(256));
      const out = new Uint8Array(base.length + extra.length);
      out.set(base);
      out.set(extra, base.length);
      return [out, `append ${extra.length} bytes`];
    }
    default: {
      // Data bytes overwritten: must always parse, and floats must still decode (NaN included).
      const out = base.slice();
      const dataStart = base.length - parts.data.length;
      for (let i = 0; i < 16; i++) out[dataStart + rng.int(parts.data.length)] = rng.int(256);
      return [out, "random data bytes"];
    }
  }
}

Deno.test("fuzz: mutated safetensors files parse or fail with SafetensorsError only", () => {
  const fixture = Deno.readFileSync(`${fixturePath("tiny-hf-bf16")}/model.safetensors`);
  const rng = new SeededRng(20240601, "fuzz");
  const values = new Float32Array(97);
  rng.fillNormal(values, 0, 1);
  const written = writeSafetensors([
    ["a", { data: values.subarray(0, 12), shape: [3, 4] }],
    ["scalar", { data: values.subarray(12, 13), shape: [] }],
    ["empty", { data: new Float32Array(0), shape: [0, 5] }],
    ["b", { data: values.subarray(13), shape: [2, 42] }],
  ], { dtype: "F16", metadata: { format: "pt", note: "fuzz" } });
  const synthetic = syntheticGpt2({
    nLayers: 1,
    nHeads: 2,
    dModel: 8,
    dVocab: 11,
    nCtx: 5,
    seed: 3,
  }).weights;

  let parsed = 0;
  let rejected = 0;
  for (const base of [fixture, written, synthetic]) {
    const parts = split(base);
    parseSafetensors(base); // the base itself is valid
    for (let i = 0; i < MUTANTS_PER_BASE; i++) {
      const [mutant, what] = mutate(base, parts, rng);
      try {
        const file = parseSafetensors(mutant, "fuzz.safetensors");
        parsed++;
        for (const name of file.names()) {
          const info = file.info(name);
          if (info.dtype === "F32" || info.dtype === "F16" || info.dtype === "BF16") {
            const t = file.tensor(name);
            assert.equal(t.data.length * (info.dtype === "F32" ? 4 : 2), info.byteLength);
          } else {
            assert.throws(() => file.tensor(name), SafetensorsError);
          }
        }
      } catch (e) {
        if (e instanceof SafetensorsError) {
          assert.ok(e.message.startsWith("fuzz.safetensors: "), e.message);
          rejected++;
          continue;
        }
        throw new Error(`mutant ${i} (${what}) threw ${e}`, { cause: e });
      }
    }
  }
  // Both outcomes must have happened, or the mutations are not testing much.
  assert.ok(parsed > 200, `only ${parsed} mutants parsed`);
  assert.ok(rejected > 2000, `only ${rejected} mutants were rejected`);
});
