/**
 * Fuzz test of the PyTorch checkpoint reader (zip + restricted unpickler): seeded random mutations
 * of real torch.save files, both of the raw archive (truncations, bit flips, forged directory
 * fields) and of the pickle inside it re-zipped with valid CRCs (flips, cuts, spliced and inserted
 * opcodes, forged integers), so that the unpickler itself is exercised, not just the CRC check.
 * Each mutant must either load, and then every float tensor must read, or fail with a PickleError
 * or WeightsError; anything else (a TypeError, a RangeError from a huge allocation, a hang) is a bug.
 * @module
 */
import assert from "node:assert/strict";
import { PickleError, WeightsError } from "../core/errors.ts";
import { SeededRng } from "../core/rng.ts";
import { readTorchCheckpoint } from "../io/torch_bin.ts";
import { readZip } from "../io/zip.ts";
import { fromFileUrl } from "./path.ts";
import { writeZip, zipEntries } from "./zip_writer.ts";

const MUTANTS_PER_BASE = 2000;
const TORCH_BIN = fromFileUrl(new URL("./fixtures/torch-bin/", import.meta.url));

/** Integers worth forging: around 2^8, 2^16, 2^31, 2^32, 2^53, 2^63, and negatives. */
const FORGED = [0, 1, 255, 256, 65535, 2 ** 31 - 1, -1, -(2 ** 31)];

function splice(a: Uint8Array, at: number, remove: number, insert: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length - remove + insert.length);
  out.set(a.subarray(0, at));
  out.set(insert, at);
  out.set(a.subarray(at + remove), at + insert.length);
  return out;
}

/** Mutates the pickle, returning the new pickle bytes and a description. */
function mutatePickle(pkl: Uint8Array, rng: SeededRng): [Uint8Array, string] {
  const at = rng.int(pkl.length);
  switch (rng.int(6)) {
    case 0: {
      const out = pkl.slice();
      for (let i = 0, n = 1 + rng.int(3); i < n; i++) out[rng.int(out.length)] ^= 1 << rng.int(8);
      return [out, "pickle bit flips"];
    }
    case 1:
      return [pkl.slice(0, at), `pickle cut at ${at}`];
    case 2: {
      const byte = rng.int(256);
      return [splice(pkl, at, 0, new Uint8Array([byte])), `insert opcode 0x${byte.toString(16)}`];
    }
    case 3: {
      const len = 1 + rng.int(16);
      return [splice(pkl, at, Math.min(len, pkl.length - at), new Uint8Array()), "delete span"];
    }
    case 4: {
      const from = rng.int(pkl.length);
      const span = pkl.slice(from, from + 1 + rng.int(40));
      return [splice(pkl, at, 0, span), `copy ${span.length} bytes from ${from} to ${at}`];
    }
    default: {
      // Replace one integer opcode (BININT1 / BININT2) by a forged BININT or LONG1.
      const ints = [...pkl.keys()].filter((i) => pkl[i] === 0x4b || pkl[i] === 0x4d);
      if (ints.length === 0) return [pkl, "no integers"];
      const i = ints[rng.int(ints.length)];
      const width = pkl[i] === 0x4b ? 2 : 3;
      let forged: Uint8Array;
      if (rng.uniform() < 0.5) {
        forged = new Uint8Array(5);
        forged[0] = 0x4a;
        new DataView(forged.buffer).setInt32(1, FORGED[rng.int(FORGED.length)], true);
      } else {
        forged = new Uint8Array(10);
        forged[0] = 0x8a;
        forged[1] = 8;
        const v = rng.uniform() < 0.5 ? 2n ** 53n + 1n : -(2n ** 62n);
        new DataView(forged.buffer).setBigInt64(2, v, true);
      }
      return [splice(pkl, i, width, forged), `forge integer at ${i}`];
    }
  }
}

/** One random mutation of a valid checkpoint. */
function mutate(base: Uint8Array, entries: Array<[string, Uint8Array]>, rng: SeededRng) {
  const kind = rng.int(8);
  switch (kind) {
    case 0: {
      const at = rng.int(base.length);
      return [base.slice(0, at), `truncate at ${at}`] as const;
    }
    case 1: {
      const out = base.slice();
      for (let i = 0, n = 1 + rng.int(4); i < n; i++) out[rng.int(out.length)] ^= 1 << rng.int(8);
      return [out, "bit flips anywhere"] as const;
    }
    case 2: {
      // The directory and end records: the last few hundred bytes.
      const out = base.slice();
      const tail = Math.min(out.length, 64 + entries.length * 80);
      const at = out.length - 1 - rng.int(tail - 3);
      const value = rng.uniform() < 0.5 ? 0xffffffff : rng.int(2 ** 32);
      new DataView(out.buffer).setUint32(Math.min(at, out.length - 4), value, true);
      return [out, `directory field = ${value}`] as const;
    }
    case 3: {
      const extra = new Uint8Array(1 + rng.int(64)).map(() => rng.int(256));
      const out = new Uint8Array(base.length + extra.length);
      out.set(base);
      out.set(extra, base.length);
      return [out, `append ${extra.length} bytes`] as const;
    }
    case 4: {
      // Storage bytes rewritten, CRCs kept valid: must load, floats must decode (NaN included).
      const copy = entries.map(([n, b]): [string, Uint8Array] => [n, b.slice()]);
      const storages = copy.filter(([n, b]) => n.includes("/data/") && b.length > 0);
      const [, bytes] = storages[rng.int(storages.length)];
      for (let i = 0; i < 8; i++) bytes[rng.int(bytes.length)] = rng.int(256);
      return [writeZip(copy), "storage bytes"] as const;
    }
    case 5: {
      // An entry dropped or renamed.
      const i = rng.int(entries.length);
      const copy = entries.slice();
      if (rng.uniform() < 0.5) copy.splice(i, 1);
      else copy[i] = [`${copy[i][0]}x`, copy[i][1]];
      return [writeZip(copy), `drop or rename ${entries[i][0]}`] as const;
    }
    default: {
      const copy = entries.slice();
      const i = copy.findIndex(([n]) => n.endsWith("/data.pkl"));
      const [pkl, what] = mutatePickle(copy[i][1], rng);
      copy[i] = [copy[i][0], pkl];
      return [writeZip(copy), what] as const;
    }
  }
}

Deno.test("fuzz: mutated PyTorch checkpoints load or fail with PickleError/WeightsError only", () => {
  const rng = new SeededRng(20240917, "torch-bin-fuzz");
  let loaded = 0;
  let rejected = 0;
  for (const path of ["views.bin", "tiny-gpt2-bf16/pytorch_model.bin"]) {
    const base = Deno.readFileSync(`${TORCH_BIN}${path}`);
    const entries = zipEntries(readZip(base));
    readTorchCheckpoint(base); // the base itself is valid
    for (let i = 0; i < MUTANTS_PER_BASE; i++) {
      const [mutant, what] = mutate(base, entries, rng);
      try {
        const ckpt = readTorchCheckpoint(mutant, "fuzz.bin");
        for (const name of ckpt.names()) {
          const info = ckpt.info(name);
          if (info.dtype === "F32" || info.dtype === "F16" || info.dtype === "BF16") {
            const t = ckpt.tensor(name);
            assert.equal(t.data.length, info.shape.reduce((a, b) => a * b, 1));
          }
        }
        loaded++;
      } catch (e) {
        if (e instanceof PickleError || e instanceof WeightsError) {
          assert.match(e.message, /^fuzz\.bin/, e.message);
          rejected++;
          continue;
        }
        throw new Error(`${path} mutant ${i} (${what}) threw ${e}`, { cause: e });
      }
    }
  }
  // Both outcomes must have happened, or the mutations are not testing much.
  assert.ok(loaded > 300, `only ${loaded} mutants loaded`);
  assert.ok(rejected > 2000, `only ${rejected} mutants were rejected`);
});
