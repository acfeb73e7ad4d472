/**
 * Reads PyTorch checkpoints (`pytorch_model.bin`, written by `torch.save` since PyTorch 1.6): a
 * zip archive holding `{prefix}/data.pkl`, a pickle of the state dict whose tensors point by
 * persistent id at raw storages `{prefix}/data/{key}`. The pickle is read by the restricted
 * unpickler of `pickle.ts` with exactly these globals allowed:
 *
 * - `collections.OrderedDict` (the state dict itself, and empty backward-hook dicts);
 * - `torch._utils._rebuild_tensor_v2`, `_rebuild_tensor` and `_rebuild_parameter`;
 * - the storage classes (`torch.FloatStorage`, `torch.HalfStorage`, `torch.BFloat16Storage`, and
 *   the double, integer and bool ones), only as the type inside a storage's persistent id.
 *
 * Anything else (`os.system`, `builtins.eval`, custom classes, ...) is refused with a
 * {@link PickleError} before any of it could run, because nothing ever runs: the allowed globals
 * are TypeScript functions that record shapes and offsets. Every view is checked against its
 * storage (offset, sizes and strides must stay inside it) and every storage against its zip entry,
 * and the unpickler's values are budgeted ({@link TorchBinLimits}). Views may alias one storage
 * (tied weights), so the float32 bytes all views will become are also counted against a budget
 * tied to the file (by default 4 times its size: a float16 file is 2, tied embeddings add a
 * little): a forged checkpoint cannot make the reader allocate more than a few times the file's
 * size, nor make {@link checkFinite}-style passes over its tensors take longer than that.
 *
 * @example
 * ```ts ignore
 * import { readTorchCheckpoint } from "./torch_bin.ts";
 * const ckpt = readTorchCheckpoint(await Deno.readFile("pytorch_model.bin"), "pytorch_model.bin");
 * ckpt.info("transformer.wte.weight"); // { dtype: "F32", shape: [50257, 768] }
 * const wte = ckpt.tensor("transformer.wte.weight"); // float32, whatever the stored dtype
 * ```
 * @module
 */
import { PickleError, WeightsError } from "../core/errors.ts";
import { decodeFloats } from "../core/dtype.ts";
import type { Tensor } from "../core/tensor.ts";
import {
  DEFAULT_MAX_PICKLE_VALUES,
  describePickleValue,
  PickleFunction,
  unpickle,
} from "./pickle.ts";
import type { Dtype, TensorMeta, TensorSource } from "./tensor_source.ts";
import { readZip, type ZipArchive } from "./zip.ts";

/** Storage classes a state dict may name, with the dtype and bytes per element they stand for. */
const STORAGE_TYPES: Readonly<Record<string, { dtype: Dtype; bytes: number }>> = {
  FloatStorage: { dtype: "F32", bytes: 4 },
  HalfStorage: { dtype: "F16", bytes: 2 },
  BFloat16Storage: { dtype: "BF16", bytes: 2 },
  DoubleStorage: { dtype: "F64", bytes: 8 },
  LongStorage: { dtype: "I64", bytes: 8 },
  IntStorage: { dtype: "I32", bytes: 4 },
  ShortStorage: { dtype: "I16", bytes: 2 },
  CharStorage: { dtype: "I8", bytes: 1 },
  ByteStorage: { dtype: "U8", bytes: 1 },
  BoolStorage: { dtype: "BOOL", bytes: 1 },
};

/** The marker a `torch.XxxStorage` global stands for. */
class StorageType {
  constructor(readonly name: string, readonly dtype: Dtype, readonly bytes: number) {}
}

/** A storage named by a persistent id: `{prefix}/data/{key}` holding `numel` elements. */
class Storage {
  constructor(
    readonly entry: string,
    readonly type: StorageType,
    readonly numel: number,
  ) {}
}

/** What `_rebuild_tensor_v2` describes: a strided view of a storage. */
class TensorView {
  constructor(
    readonly storage: Storage,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

function quote(s: string): string {
  return JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}…` : s);
}

/** The first bytes of the legacy format: PROTO 2, then LONG1 of the magic number 0x1950a86a20f9469cfc6c. */
const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8];

/** A parsed PyTorch checkpoint: a {@link TensorSource} over its state dict. */
export interface TorchCheckpoint extends TensorSource {
  /** The name used in messages. */
  readonly fileName: string;
  /**
   * The storage a tensor is a view of: its key (views of one storage share it) and raw
   * little-endian bytes, so a scan over every tensor can read each storage once.
   */
  storageOf(name: string): { key: string; dtype: Dtype; bytes: Uint8Array };
}

/**
 * Budgets for reading a `pytorch_model.bin` from a stranger; the defaults serve every real
 * checkpoint, and a rare legitimate file past them can be read with larger ones.
 *
 * @example
 * ```ts ignore
 * import { readTorchCheckpoint } from "./torch_bin.ts";
 * // A checkpoint whose tensors legitimately alias one storage many times over:
 * const ckpt = readTorchCheckpoint(await Deno.readFile("pytorch_model.bin"), "pytorch_model.bin", {
 *   maxExpansion: 64,
 * });
 * ```
 */
export interface TorchBinLimits {
  /** Values the pickle may create (default {@link DEFAULT_MAX_PICKLE_VALUES}, 1M). */
  maxPickleValues?: number;
  /**
   * The float32 bytes that all tensors together become, as a multiple of the file's size
   * (default 4). Views of one storage each count in full.
   */
  maxExpansion?: number;
}

/** The default {@link TorchBinLimits.maxExpansion}. */
export const DEFAULT_MAX_EXPANSION = 4;

class ParsedCheckpoint implements TorchCheckpoint {
  readonly fileName: string;
  #zip: ZipArchive;
  #tensors: Map<string, TensorView>;

  constructor(fileName: string, zip: ZipArchive, tensors: Map<string, TensorView>) {
    this.fileName = fileName;
    this.#zip = zip;
    this.#tensors = tensors;
  }

  names(): string[] {
    return [...this.#tensors.keys()];
  }

  has(name: string): boolean {
    return this.#tensors.has(name);
  }

  #view(name: string): TensorView {
    const view = this.#tensors.get(name);
    if (view !== undefined) return view;
    const n = this.#tensors.size;
    const sample = [...this.#tensors.keys()].slice(0, 5).map(quote).join(", ");
    throw new WeightsError(
      `${this.fileName}: no tensor named ${quote(name)}; the checkpoint has ${n} tensor` +
        `${n === 1 ? "" : "s"}${n > 0 ? `, e.g. ${sample}${n > 5 ? ", …" : ""}` : ""}`,
    );
  }

  storageOf(name: string): { key: string; dtype: Dtype; bytes: Uint8Array } {
    const v = this.#view(name);
    return {
      key: v.storage.entry,
      dtype: v.storage.type.dtype,
      bytes: this.#zip.read(v.storage.entry),
    };
  }

  info(name: string): TensorMeta {
    const v = this.#view(name);
    return { dtype: v.storage.type.dtype, shape: [...v.shape] };
  }

  tensor(name: string): Tensor {
    const v = this.#view(name);
    const { dtype, bytes } = v.storage.type;
    if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16") {
      throw new WeightsError(
        `${this.fileName}: tensor ${quote(name)} has dtype ${dtype}: only F32, F16 and BF16 ` +
          `tensors can be read as float32 weights`,
      );
    }
    const raw = this.#zip.read(v.storage.entry);
    const numel = v.shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(numel);
    if (numel === 0) return { data: out, shape: [...v.shape] };
    if (isContiguous(v.shape, v.stride)) {
      decodeFloats(dtype, raw.subarray(v.offset * bytes, (v.offset + numel) * bytes), out);
      return { data: out, shape: [...v.shape] };
    }
    // A strided view (a transpose, a column): widen the span it touches, then gather.
    const last = v.offset + v.shape.reduce((acc, d, i) => acc + (d - 1) * v.stride[i], 0);
    const span = new Float32Array(last - v.offset + 1);
    decodeFloats(dtype, raw.subarray(v.offset * bytes, (last + 1) * bytes), span);
    gather(span, v.shape, v.stride, out);
    return { data: out, shape: [...v.shape] };
  }
}

function isContiguous(shape: number[], stride: number[]): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expected) return false;
    expected *= shape[i];
  }
  return true;
}

/** Row-major copy of the strided view `span[Σ index_i * stride_i]` into `out`. */
function gather(span: Float32Array, shape: number[], stride: number[], out: Float32Array): void {
  const rank = shape.length;
  const index = new Array<number>(rank).fill(0);
  let at = 0;
  for (let i = 0; i < out.length; i++) {
    out[i] = span[at];
    for (let d = rank - 1; d >= 0; d--) {
      if (++index[d] < shape[d]) {
        at += stride[d];
        break;
      }
      at -= (shape[d] - 1) * stride[d];
      index[d] = 0;
    }
  }
}

/**
 * Parses a PyTorch checkpoint held in memory (referenced, not copied). Reads the archive's
 * directory and its pickle; tensor data is read, CRC-checked and widened on demand by
 * {@link TensorSource.tensor}. Throws {@link PickleError} for anything that is not a plain state
 * dict of tensors in the zip format, saying what it found.
 *
 * @param bytes The whole `.bin` file.
 * @param fileName Used in messages.
 *
 * @example
 * ```ts ignore
 * import { readTorchCheckpoint } from "./torch_bin.ts";
 * const ckpt = readTorchCheckpoint(await Deno.readFile("views.bin"), "views.bin");
 * ckpt.names(); // ["tied.a", "tied.b", ...]
 * ```
 */
export function readTorchCheckpoint(
  bytes: Uint8Array,
  fileName = "pytorch_model.bin",
  limits: TorchBinLimits = {},
): TorchCheckpoint {
  const maxExpansion = limits.maxExpansion ?? DEFAULT_MAX_EXPANSION;
  const maxPickleValues = limits.maxPickleValues ?? DEFAULT_MAX_PICKLE_VALUES;
  for (const [key, v] of Object.entries({ maxExpansion, maxPickleValues })) {
    if (typeof v !== "number" || !(v > 0)) {
      throw new PickleError(`${fileName}: ${key} must be a positive number, got ${String(v)}`);
    }
  }
  const fail = (what: string): never => {
    throw new PickleError(`${fileName}: ${what}`);
  };
  if (LEGACY_MAGIC.every((b, i) => bytes[i] === b)) {
    fail(
      `this is PyTorch's legacy format (torch.save before PyTorch 1.6, or ` +
        `_use_new_zipfile_serialization=False), which is not supported: load it in PyTorch and ` +
        `save it again with torch.save, or convert it to safetensors`,
    );
  }
  if (bytes[0] !== 0x50 || bytes[1] !== 0x4b) {
    fail(
      `not a PyTorch checkpoint: it does not start like a zip archive ("PK"), which torch.save ` +
        `writes: the file is corrupt, or of another format`,
    );
  }
  const zip = readZip(bytes, fileName);
  const pickles = zip.names().filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pickles.length !== 1) {
    fail(
      pickles.length === 0
        ? `the archive has no {prefix}/data.pkl, so it is a zip file but not a torch.save checkpoint`
        : `the archive has ${pickles.length} data.pkl files (${pickles.join(", ")}); expected one`,
    );
  }
  const prefix = pickles[0].slice(0, -"data.pkl".length);
  if (zip.has(`${prefix}byteorder`)) {
    const order = new TextDecoder().decode(zip.read(`${prefix}byteorder`)).trim();
    if (order !== "little") {
      fail(
        `its tensors are stored ${JSON.stringify(order)}-endian; only little-endian checkpoints ` +
          `(those saved on x86 and ARM machines) are supported`,
      );
    }
  }

  const storages = new Map<string, Storage>();
  const storageTypes = new Map<string, StorageType>();
  const rebuildV2 = new PickleFunction("torch._utils._rebuild_tensor_v2", (args) => {
    if (args.length < 6 || args.length > 7) {
      fail(`_rebuild_tensor_v2 takes 6 or 7 arguments, got ${args.length}`);
    }
    const [, , , , requiresGrad, hooks, metadata] = args;
    if (typeof requiresGrad !== "boolean") fail("_rebuild_tensor_v2's requires_grad is not a bool");
    if (!(hooks instanceof Map) || hooks.size !== 0) {
      fail("_rebuild_tensor_v2's backward hooks must be an empty OrderedDict");
    }
    if (metadata !== undefined && metadata !== null && !(metadata instanceof Map)) {
      fail("_rebuild_tensor_v2's metadata must be a dict");
    }
    return view(args.slice(0, 4));
  });
  const rebuildV1 = new PickleFunction("torch._utils._rebuild_tensor", (args) => {
    if (args.length !== 4) fail(`_rebuild_tensor takes 4 arguments, got ${args.length}`);
    return view(args);
  });
  const rebuildParameter = new PickleFunction("torch._utils._rebuild_parameter", (args) => {
    if (args.length !== 3 || !(args[0] instanceof TensorView)) {
      fail("_rebuild_parameter takes a tensor, requires_grad and hooks");
    }
    return args[0];
  });
  const orderedDict = new PickleFunction("collections.OrderedDict", (args) => {
    if (args.length !== 0) fail("collections.OrderedDict is only allowed with no arguments");
    return new Map();
  });
  const view = (args: readonly unknown[]): TensorView => {
    const [storage, offset, shape, stride] = args;
    if (!(storage instanceof Storage)) {
      return fail(`a tensor is rebuilt from ${describePickleValue(storage)}, not a storage`);
    }
    const dims = (v: unknown, what: string): number[] => {
      if (
        !Array.isArray(v) || v.length > 64 || !v.every((d) => Number.isSafeInteger(d) && d >= 0)
      ) {
        fail(`a tensor's ${what} must be a tuple of at most 64 non-negative integers`);
      }
      return [...(v as number[])];
    };
    const sizes = dims(shape, "size");
    const strides = dims(stride, "stride");
    if (!Number.isSafeInteger(offset) || (offset as number) < 0) {
      fail("a tensor's storage offset must be a non-negative integer");
    }
    if (sizes.length !== strides.length) fail("a tensor's size and stride differ in length");
    // Elements, capped at the storage's: a view may not hold more values than the storage it
    // reads (that is what keeps a forged size from becoming a huge allocation).
    let numel = 1;
    for (const d of sizes) numel = Math.min(numel * d, storage.numel + 1);
    if (numel > storage.numel) {
      fail(
        `a tensor of size [${sizes}] has more elements than its storage ${quote(storage.entry)} ` +
          `(${storage.numel}): expanded (stride 0) views are not supported, and anything else ` +
          `means the file is corrupt`,
      );
    }
    if (numel > 0) {
      let last = offset as number;
      for (let i = 0; i < sizes.length; i++) last += (sizes[i] - 1) * strides[i];
      if (last >= storage.numel) {
        fail(
          `a tensor (offset ${offset}, size [${sizes}], stride [${strides}]) reaches element ` +
            `${last} of storage ${quote(storage.entry)}, which has ${storage.numel}: the file is ` +
            `corrupt`,
        );
      }
    }
    return new TensorView(storage, offset as number, sizes, strides);
  };

  const state = unpickle(zip.read(pickles[0]), {
    fileName: `${fileName} (${pickles[0]})`,
    maxValues: maxPickleValues,
    findGlobal(module, name) {
      if (module === "collections" && name === "OrderedDict") return orderedDict;
      if (module === "torch._utils") {
        if (name === "_rebuild_tensor_v2") return rebuildV2;
        if (name === "_rebuild_tensor") return rebuildV1;
        if (name === "_rebuild_parameter") return rebuildParameter;
      }
      if (module === "torch" && Object.hasOwn(STORAGE_TYPES, name)) {
        let type = storageTypes.get(name);
        if (!type) {
          type = new StorageType(name, STORAGE_TYPES[name].dtype, STORAGE_TYPES[name].bytes);
          storageTypes.set(name, type);
        }
        return type;
      }
      return undefined;
    },
    persistentLoad(pid) {
      if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== "storage") {
        return fail(`a persistent id is ${describePickleValue(pid)}, not a storage reference`);
      }
      const [, type, key, , numel] = pid;
      if (!(type instanceof StorageType)) {
        return fail(`a storage reference names ${describePickleValue(type)}, not a storage type`);
      }
      if (typeof key !== "string" || !/^\w{1,64}$/.test(key)) {
        return fail(`a storage key is ${describePickleValue(key)}, not a short name`);
      }
      if (!Number.isSafeInteger(numel) || numel < 0) {
        return fail(`storage ${quote(key)} has element count ${describePickleValue(numel)}`);
      }
      const entry = `${prefix}data/${key}`;
      let storage = storages.get(key);
      if (storage === undefined) {
        if (!zip.has(entry)) fail(`the pickle refers to storage ${quote(entry)}, which is absent`);
        const size = zip.entry(entry).size;
        if (size !== numel * type.bytes) {
          fail(
            `storage ${quote(entry)} holds ${size} bytes, but the pickle says ${numel} elements ` +
              `of ${type.name} (${numel * type.bytes} bytes): the file is corrupt`,
          );
        }
        storage = new Storage(entry, type, numel);
        storages.set(key, storage);
      } else if (storage.type !== type || storage.numel !== numel) {
        fail(`storage ${quote(entry)} is referred to with two different types or sizes`);
      }
      return storage;
    },
  });

  if (!(state instanceof Map)) {
    return fail(`the pickle holds ${describePickleValue(state)}, not a state dict`);
  }
  const tensors = new Map<string, TensorView>();
  for (const [key, value] of state) {
    if (typeof key !== "string") fail(`the state dict has a key ${describePickleValue(key)}`);
    if (!(value instanceof TensorView)) {
      fail(
        `state dict entry ${quote(key as string)} is ${describePickleValue(value)}, not a tensor` +
          (value instanceof Map
            ? ` (a training checkpoint? save model.state_dict() alone, as save_pretrained does)`
            : ""),
      );
    }
    tensors.set(key as string, value as TensorView);
  }
  // Tied weights are views of one storage: each becomes its own float32 array when read. Count
  // what all of them will be, so aliasing cannot turn a small file into a huge allocation.
  let floatBytes = 0;
  for (const v of tensors.values()) floatBytes += 4 * v.shape.reduce((a, b) => a * b, 1);
  const budget = maxExpansion * bytes.length + (1 << 20);
  if (floatBytes > budget) {
    fail(
      `its ${tensors.size} tensors would take ${floatBytes} bytes as float32, more than ` +
        `${maxExpansion} times the file's ${bytes.length} bytes: many tensors are views of the ` +
        `same storage, which a real checkpoint does not need (it is forged, or corrupt). A ` +
        `legitimate one can be read with a larger maxExpansion.`,
    );
  }
  return new ParsedCheckpoint(fileName, zip, tensors);
}
