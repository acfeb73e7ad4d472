/**
 * Fuzz test of SAE loading: seeded random mutations of a Gemma Scope `params.npz` (byte flips,
 * truncations, forged `.npy` header fields: descr, fortran_order, shape, header length), of
 * `cfg.json` (values replaced by odd JSON, keys dropped) and of `sae_weights.safetensors` (byte
 * flips, truncations, appended bytes). Each mutant must load, or fail with one of the library's
 * typed errors (a LensError); anything else (a TypeError, a RangeError, a hang) is a bug.
 * @module
 */
import assert from "node:assert/strict";
import { LensError } from "../core/errors.ts";
import { SeededRng } from "../core/rng.ts";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { parseNpy } from "../io/npy.ts";
import { SAE } from "../sae/mod.ts";
import { readZip } from "../io/zip.ts";
import { fixturePath } from "./fixtures.ts";
import { writeZip, zipEntries } from "./zip_writer.ts";

const MUTANTS = 400;
const backend = await WasmBackend.load({ threads: 1 });
const SAES = fixturePath("sae");

/** Loads `files` from a fresh folder; returns "ok" or the error's class name (typed only). */
async function tryLoad(files: Record<string, Uint8Array>, what: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "sae_fuzz_" });
  try {
    for (const [name, bytes] of Object.entries(files)) {
      await Deno.writeFile(`${dir}/${name}`, bytes);
    }
    const npz = "params.npz" in files;
    await SAE.loadFromDisk(npz ? `${dir}/params.npz` : dir, {
      backend,
      hookName: npz ? "blocks.1.hook_resid_post" : undefined,
    });
    return "ok";
  } catch (e) {
    if (!(e instanceof LensError)) {
      throw new Error(`${what}: an untyped error: ${(e as Error)?.stack ?? e}`);
    }
    return e.name;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function mutateBytes(src: Uint8Array, rng: SeededRng): Uint8Array {
  const b = src.slice();
  switch (rng.int(4)) {
    case 0:
      return b.subarray(0, rng.int(b.length));
    case 1: {
      const n = 1 + rng.int(8);
      for (let i = 0; i < n; i++) b[rng.int(b.length)] = rng.int(256);
      return b;
    }
    case 2: {
      const extra = new Uint8Array(b.length + 1 + rng.int(64));
      extra.set(b);
      return extra;
    }
    default: {
      // flip bytes in the first 200 (headers, where structure lives)
      const n = 1 + rng.int(4);
      for (let i = 0; i < n; i++) b[rng.int(Math.min(200, b.length))] ^= 1 << rng.int(8);
      return b;
    }
  }
}

/** An `.npy` file with a forged header (the data as given). */
function npy(header: string, data: Uint8Array, major = 1): Uint8Array {
  const text = new TextEncoder().encode(header + "\n");
  const pre = major === 1 ? 10 : 12;
  const out = new Uint8Array(pre + text.length + data.length);
  out.set([0x93, 78, 85, 77, 80, 89, major, 0]);
  const v = new DataView(out.buffer);
  if (major === 1) v.setUint16(8, text.length, true);
  else v.setUint32(8, text.length, true);
  out.set(text, pre);
  out.set(data, pre + text.length);
  return out;
}

Deno.test("mutated params.npz files load or fail with typed errors", async () => {
  const base = Deno.readFileSync(`${SAES}/gemma-scope/params.npz`);
  const rng = new SeededRng(18, "npz-fuzz");
  const outcomes = new Map<string, number>();
  for (let i = 0; i < MUTANTS; i++) {
    const got = await tryLoad({ "params.npz": mutateBytes(base, rng) }, `npz mutant ${i}`);
    outcomes.set(got, (outcomes.get(got) ?? 0) + 1);
  }
  assert.ok((outcomes.get("NpyError") ?? 0) > 0, JSON.stringify([...outcomes]));
});

Deno.test("npz files with mutated .npy entries (valid zip, CRCs recomputed) fail typed", async () => {
  const entries = zipEntries(readZip(Deno.readFileSync(`${SAES}/gemma-scope/params.npz`)));
  const rng = new SeededRng(18, "npy-in-npz-fuzz");
  const outcomes = new Map<string, number>();
  for (let i = 0; i < MUTANTS; i++) {
    const mutated = entries.map(([n, b]): [string, Uint8Array] => [n, b]);
    const j = rng.int(mutated.length);
    const [name, bytes] = mutated[j];
    mutated[j] = [rng.int(20) === 0 ? `${name}.txt` : name, mutateBytes(bytes, rng)];
    if (rng.int(10) === 0) mutated.splice(rng.int(mutated.length), 1); // a missing array
    const got = await tryLoad({ "params.npz": writeZip(mutated) }, `npy-in-npz mutant ${i}`);
    outcomes.set(got, (outcomes.get(got) ?? 0) + 1);
  }
  assert.ok((outcomes.get("NpyError") ?? 0) > 0, JSON.stringify([...outcomes]));
  assert.ok((outcomes.get("WeightsError") ?? 0) > 0, JSON.stringify([...outcomes]));
});

Deno.test("forged .npy headers are NpyErrors, never evaluated", () => {
  const data = new Uint8Array(24);
  const headers = [
    "{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }", // size mismatch
    "{'descr': '>f4', 'fortran_order': False, 'shape': (6,), }", // big-endian
    "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }",
    "{'descr': '<f4', 'fortran_order': None, 'shape': (6,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (-6,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}",
    "{'descr': '<f4', 'shape': (6,), }",
    "{'descr': __import__('os').system('true'), 'fortran_order': False, 'shape': (6,)}",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), } trailing",
    "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
    "['descr', '<f4']",
    "",
  ];
  for (const h of headers) {
    assert.throws(() => parseNpy(npy(h, data)), (e) => e instanceof LensError, h);
  }
  // the well-formed ones read, Fortran order transposed into C order
  const ok = parseNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data));
  assert.deepEqual(ok.shape, [2, 3]);
  const f = new Float32Array([1, 4, 2, 5, 3, 6]); // [[1,2,3],[4,5,6]] column-major
  const fortran = parseNpy(
    npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", new Uint8Array(f.buffer), 2),
  );
  assert.deepEqual([...fortran.data], [1, 2, 3, 4, 5, 6]);
  const wide = new Float64Array([0.5, -2]);
  assert.deepEqual(
    [
      ...parseNpy(
        npy(
          "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
          new Uint8Array(wide.buffer),
        ),
      ).data,
    ],
    [0.5, -2],
  );
  assert.throws(() => parseNpy(new Uint8Array([1, 2, 3])), LensError);
  const huge = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", new Uint8Array(8));
  new DataView(huge.buffer).setUint16(8, 65535, true);
  assert.throws(() => parseNpy(huge), LensError, "runs past");
});

Deno.test("mutated cfg.json and sae_weights.safetensors load or fail with typed errors", async () => {
  const cfg = JSON.parse(Deno.readTextFileSync(`${SAES}/topk/cfg.json`));
  const weights = Deno.readFileSync(`${SAES}/topk/sae_weights.safetensors`);
  const rng = new SeededRng(18, "sae-cfg-fuzz");
  const odd: unknown[] = [null, true, "7", [], {}, -1, 0, 1.5, 2 ** 40, "topk", "hook_z", 1e300];
  const keys = [...Object.keys(cfg), "hook_name", "hook_name_out", "d_out", "k"];
  const outcomes = new Map<string, number>();
  for (let i = 0; i < MUTANTS; i++) {
    const c = structuredClone(cfg);
    const n = 1 + rng.int(3);
    for (let j = 0; j < n; j++) {
      const key = keys[rng.int(keys.length)];
      const meta = c.metadata;
      const target = key.startsWith("hook_") && meta && typeof meta === "object" ? meta : c;
      if (rng.int(4) === 0) delete target[key];
      else target[key] = odd[rng.int(odd.length)];
    }
    const files = {
      "cfg.json": rng.int(10) === 0
        ? mutateBytes(new TextEncoder().encode(JSON.stringify(c)), rng)
        : new TextEncoder().encode(JSON.stringify(c)),
      "sae_weights.safetensors": rng.int(2) === 0 ? mutateBytes(weights, rng) : weights,
    };
    const got = await tryLoad(files, `cfg/safetensors mutant ${i}`);
    outcomes.set(got, (outcomes.get(got) ?? 0) + 1);
  }
  assert.ok((outcomes.get("ConfigError") ?? 0) > 0, JSON.stringify([...outcomes]));
  assert.ok((outcomes.get("SafetensorsError") ?? 0) > 0, JSON.stringify([...outcomes]));
});
