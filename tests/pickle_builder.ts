/**
 * Hand-assembled pickles for tests: each helper returns the bytes of one opcode, and
 * {@link torchArchive} wraps a pickle and its storages the way `torch.save` lays them out.
 * @module
 */
import { writeZip } from "./zip_writer.ts";

const enc = new TextEncoder();

function cat(parts: Array<Uint8Array | number[]>): Uint8Array {
  const arrays = parts.map((p) => (p instanceof Uint8Array ? p : new Uint8Array(p)));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

/** Opcode helpers (protocol 2 unless noted). */
export const op = {
  proto: (v = 2) => [0x80, v],
  stop: () => [0x2e],
  mark: () => [0x28],
  tuple: () => [0x74],
  emptyTuple: () => [0x29],
  emptyDict: () => [0x7d],
  setitems: () => [0x75],
  reduce: () => [0x52],
  binpersid: () => [0x51],
  newFalse: () => [0x89],
  int: (n: number) => {
    if (n >= 0 && n < 256) return [0x4b, n];
    const b = new Uint8Array(5);
    b[0] = 0x4a;
    new DataView(b.buffer).setInt32(1, n, true);
    return b;
  },
  /** LONG1 of an 8-byte two's complement integer. */
  long: (n: bigint) => {
    const b = new Uint8Array(10);
    b[0] = 0x8a;
    b[1] = 8;
    new DataView(b.buffer).setBigInt64(2, n, true);
    return b;
  },
  str: (s: string) => {
    const bytes = enc.encode(s);
    const b = new Uint8Array(5 + bytes.length);
    b[0] = 0x58;
    new DataView(b.buffer).setUint32(1, bytes.length, true);
    b.set(bytes, 5);
    return b;
  },
  global: (module: string, name: string) => cat([[0x63], enc.encode(`${module}\n${name}\n`)]),
  ints: (ns: number[]) => cat([op.mark(), ...ns.map(op.int), op.tuple()]),
};

/** A pickle from opcode byte arrays. */
export function pickle(...parts: Array<Uint8Array | number[]>): Uint8Array {
  return cat(parts);
}

/** How one tensor of a hand-made state dict views its storage. */
export interface ViewSpec {
  storageType?: string;
  key?: string;
  numel: number;
  offset?: number;
  size: number[];
  stride: number[];
}

/** The opcodes of `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`. */
export function rebuildOps(v: ViewSpec): Uint8Array {
  return pickle(
    op.global("torch._utils", "_rebuild_tensor_v2"),
    op.mark(),
    op.mark(),
    op.str("storage"),
    op.global("torch", v.storageType ?? "FloatStorage"),
    op.str(v.key ?? "0"),
    op.str("cpu"),
    op.int(v.numel),
    op.tuple(),
    op.binpersid(),
    op.int(v.offset ?? 0),
    op.ints(v.size),
    op.ints(v.stride),
    op.newFalse(),
    op.global("collections", "OrderedDict"),
    op.emptyTuple(),
    op.reduce(),
    op.tuple(),
    op.reduce(),
  );
}

/** A state dict pickle `OrderedDict(name -> tensor)` from rebuild opcodes. */
export function stateDictPickle(entries: Array<[string, Uint8Array]>): Uint8Array {
  return pickle(
    op.proto(),
    op.global("collections", "OrderedDict"),
    op.emptyTuple(),
    op.reduce(),
    op.mark(),
    ...entries.flatMap(([name, value]) => [op.str(name), value]),
    op.setitems(),
    op.stop(),
  );
}

/** A torch.save-style archive: `archive/data.pkl`, `archive/data/{key}`, `archive/version`. */
export function torchArchive(
  pkl: Uint8Array,
  storages: Record<string, Uint8Array>,
  extra: Array<[string, Uint8Array]> = [],
): Uint8Array {
  return writeZip([
    ["archive/data.pkl", pkl],
    ...Object.entries(storages).map(([k, v]): [string, Uint8Array] => [`archive/data/${k}`, v]),
    ["archive/version", enc.encode("3\n")],
    ...extra,
  ]);
}
