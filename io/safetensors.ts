/**
 * Reads and writes the safetensors format (https://github.com/huggingface/safetensors): an 8-byte
 * little-endian header length N, N bytes of UTF-8 JSON describing each tensor (`dtype`, `shape`,
 * `data_offsets` into the data area), then the data area. Parsing validates the file the way the
 * official implementation does (header size cap, UTF-8, JSON, field types, byte lengths that match
 * shape and dtype, tensors that tile the data area without gaps, overlaps or dangling bytes), in
 * time and memory proportional to the header only; tensor data is read on demand.
 *
 * @example
 * ```ts
 * import { parseSafetensors, writeSafetensors } from "./safetensors.ts";
 * const bytes = writeSafetensors({ w: { data: new Float32Array([1, 2, 3, 4]), shape: [2, 2] } });
 * const file = parseSafetensors(bytes);
 * file.tensor("w").shape; // [2, 2]
 * ```
 * @module
 */
import { SafetensorsError } from "../core/errors.ts";
import { numel, type Tensor } from "../core/tensor.ts";
import { decodeFloats, encodeFloats, FLOAT_DTYPE_BYTES, type FloatDtype } from "../core/dtype.ts";

export type { FloatDtype } from "../core/dtype.ts";

/** The largest header the official implementation accepts (100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Bits per element of every dtype the official implementation knows. */
const DTYPE_BITS: Readonly<Record<string, number>> = Object.freeze({
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  F64: 64,
  C64: 64,
  I64: 64,
  U64: 64,
});

/**
 * A dtype name as safetensors spells it. Files may hold any of these; `tensor()` reads `F32`,
 * `F16` and `BF16` (see {@link FloatDtype}) and refuses the others.
 */
export type Dtype =
  | FloatDtype
  | "BOOL"
  | "F4"
  | "F6_E2M3"
  | "F6_E3M2"
  | "U8"
  | "I8"
  | "F8_E5M2"
  | "F8_E4M3"
  | "F8_E8M0"
  | "I16"
  | "U16"
  | "I32"
  | "U32"
  | "F64"
  | "C64"
  | "I64"
  | "U64";

/** Where one tensor lives in a parsed file. */
export interface TensorInfo {
  /** The stored dtype, e.g. `"F32"`. */
  dtype: Dtype;
  /** The shape, outermost first (`[]` for a scalar). */
  shape: number[];
  /** Offset of the tensor's first byte from the start of the file (not of the data area). */
  byteOffset: number;
  /** Number of bytes the tensor occupies (= number of elements x dtype size). */
  byteLength: number;
}

/**
 * A parsed, validated safetensors file. It keeps a reference to the bytes it was parsed from and
 * decodes tensors on demand.
 *
 * @example
 * ```ts
 * import { parseSafetensors } from "./safetensors.ts";
 * // The embedded model's weights (any model.safetensors reads the same way).
 * const url = new URL("../weights/induction-toy/model.safetensors", import.meta.url);
 * const file = parseSafetensors(await Deno.readFile(url));
 * for (const name of file.names()) console.log(name, file.info(name).shape);
 * const wte = file.tensor("wte.weight"); // a fresh Float32Array, whatever the stored dtype
 * ```
 */
export interface SafetensorsFile {
  /** The name used in error messages (the `fileName` given to {@link parseSafetensors}). */
  readonly fileName: string;
  /** The `__metadata__` string map (empty when the file has none), e.g. `{ format: "pt" }`. */
  readonly metadata: Readonly<Record<string, string>>;
  /** N, the length of the JSON header in bytes. */
  readonly headerLength: number;
  /** Offset of the data area from the start of the file (8 + N). */
  readonly dataOffset: number;
  /** Tensor names in storage order (by offset). */
  names(): string[];
  /** Whether a tensor of this name exists. */
  has(name: string): boolean;
  /** Dtype, shape and byte range of a tensor; throws {@link SafetensorsError} if unknown. */
  info(name: string): TensorInfo;
  /**
   * The tensor widened to a fresh float32 tensor (F32 copied, F16 and BF16 converted exactly).
   * Throws {@link SafetensorsError} for unknown names and non-float dtypes.
   */
  tensor(name: string): Tensor;
  /** The tensor's raw little-endian bytes: a view into the parsed buffer, not a copy. */
  rawBytes(name: string): Uint8Array;
}

interface Entry {
  name: string;
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
}

/** Largest element count representable in the official implementation's 64-bit arithmetic. */
const U64_LIMIT = 2 ** 64;

function quote(name: string): string {
  return JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);
}

/**
 * A number the header writes with a fraction, an exponent or as `-0` (`1.0`, `1e0`): JSON.parse
 * reads it as an integer, but the official implementation (serde_json) reads it as a float and
 * refuses it where a shape or an offset belongs, so the parser keeps its text to refuse it too.
 */
class FloatLiteral {
  constructor(readonly source: string) {}
}

/** JSON.parse's reviver; `context.source` is the number's text (ES2025, Deno 2, Chrome 114+). */
function markFloats(_key: string, value: unknown, context?: { source?: string }): unknown {
  const source = context?.source;
  if (
    typeof value === "number" && source !== undefined && (/[.eE]/.test(source) || source === "-0")
  ) {
    return new FloatLiteral(source);
  }
  return value;
}

function describe(value: unknown): string {
  if (value instanceof FloatLiteral) return `the float ${value.source}`;
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  const text = JSON.stringify(value) ?? String(value);
  return `${typeof value} ${text.length > 60 ? `${text.slice(0, 60)}…` : text}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

class ParsedSafetensors implements SafetensorsFile {
  readonly fileName: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly headerLength: number;
  readonly dataOffset: number;
  #bytes: Uint8Array;
  #entries: Map<string, Entry>;
  #order: string[];

  constructor(
    fileName: string,
    bytes: Uint8Array,
    headerLength: number,
    metadata: Record<string, string>,
    sorted: Entry[],
  ) {
    this.fileName = fileName;
    this.metadata = Object.freeze(metadata);
    this.headerLength = headerLength;
    this.dataOffset = 8 + headerLength;
    this.#bytes = bytes;
    this.#entries = new Map(sorted.map((e) => [e.name, e]));
    this.#order = sorted.map((e) => e.name);
  }

  names(): string[] {
    return [...this.#order];
  }

  has(name: string): boolean {
    return this.#entries.has(name);
  }

  #entry(name: string): Entry {
    const entry = this.#entries.get(name);
    if (entry !== undefined) return entry;
    const n = this.#order.length;
    if (n === 0) {
      throw new SafetensorsError(
        `${this.fileName}: no tensor named ${quote(name)}: the file holds no tensors at all`,
      );
    }
    const alternatives = [`transformer.${name}`];
    if (name.startsWith("transformer.")) alternatives.push(name.slice("transformer.".length));
    const hint = alternatives.find((a) => this.#entries.has(a));
    const sample = this.#order.slice(0, 5).map(quote).join(", ");
    throw new SafetensorsError(
      `${this.fileName}: no tensor named ${quote(name)}` +
        (hint !== undefined ? ` (did you mean ${quote(hint)}?)` : "") +
        `; the file has ${n} tensor${n === 1 ? "" : "s"}, e.g. ${sample}${n > 5 ? ", …" : ""}`,
    );
  }

  info(name: string): TensorInfo {
    const e = this.#entry(name);
    return {
      dtype: e.dtype,
      shape: [...e.shape],
      byteOffset: this.dataOffset + e.begin,
      byteLength: e.end - e.begin,
    };
  }

  rawBytes(name: string): Uint8Array {
    const e = this.#entry(name);
    return this.#bytes.subarray(this.dataOffset + e.begin, this.dataOffset + e.end);
  }

  tensor(name: string): Tensor {
    const e = this.#entry(name);
    if (e.dtype !== "F32" && e.dtype !== "F16" && e.dtype !== "BF16") {
      throw new SafetensorsError(
        `${this.fileName}: tensor ${quote(name)} has unsupported dtype ${e.dtype}: only F32, F16 ` +
          `and BF16 tensors can be read as float32 weights`,
      );
    }
    const out = new Float32Array(numel(e.shape));
    decodeFloats(e.dtype, this.rawBytes(name), out);
    return { data: out, shape: [...e.shape] };
  }
}

/**
 * Parses and validates a safetensors file held in memory. Validation follows the official
 * implementation: the 8-byte little-endian header length must fit in the file and not exceed
 * {@link MAX_HEADER_BYTES}; the header must be UTF-8 JSON describing an object (trailing
 * whitespace padding is allowed); `__metadata__`, if present, maps strings to strings; every other
 * key is a tensor with a known `dtype`, a `shape` of non-negative integers (written as integers:
 * `1.0` and `1e0` are refused, as serde_json refuses them) and `data_offsets`
 * `[begin, end]` whose length equals elements x dtype size; sorted by offset, the tensors tile the
 * data area from 0 to its very end with no gaps or overlaps. Work and memory are proportional to
 * the header: tensor data is neither copied nor read until {@link SafetensorsFile.tensor}.
 *
 * Every failure is a {@link SafetensorsError} naming `fileName`, the tensor when there is one, and
 * what is wrong.
 *
 * @param bytes The whole file (any view; it is referenced, not copied).
 * @param fileName Used in error messages.
 *
 * @example
 * ```ts
 * import { parseSafetensors } from "./safetensors.ts";
 * const url = new URL("../weights/induction-toy/model.safetensors", import.meta.url);
 * const file = parseSafetensors(await Deno.readFile(url), "induction-toy/model.safetensors");
 * file.info("wte.weight").shape; // [2048, 128]; with byteOffset, byteLength and the dtype
 * ```
 */
export function parseSafetensors(
  bytes: Uint8Array,
  fileName = "model.safetensors",
): SafetensorsFile {
  const fail = (what: string): never => {
    throw new SafetensorsError(`${fileName}: ${what}`);
  };
  const total = bytes.length;
  if (total < 8) {
    fail(
      `the file is ${total} byte${total === 1 ? "" : "s"} long, too short for the 8-byte header ` +
        `length a safetensors file starts with; it looks truncated or empty: re-download it`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const lo = view.getUint32(0, true);
  const hi = view.getUint32(4, true);
  const n = hi * 2 ** 32 + lo; // may be inexact above 2^53, but then it is far over the cap
  if (n > MAX_HEADER_BYTES) {
    fail(
      `the header length field says ${hi === 0 ? n : `about ${n.toExponential(3)}`} bytes, over ` +
        `the ${MAX_HEADER_BYTES}-byte limit of the safetensors format: this is not a ` +
        `safetensors file, or its first 8 bytes are corrupt`,
    );
  }
  if (8 + n > total) {
    fail(
      `the header length field says ${n} bytes, but only ${total - 8} bytes follow it: the file ` +
        `looks truncated (or is not a safetensors file): re-download it`,
    );
  }

  // Header text: strict UTF-8, keeping a BOM so that JSON.parse rejects it as serde_json does.
  let headerBytes = bytes.subarray(8, 8 + n);
  if (!(headerBytes.buffer instanceof ArrayBuffer)) headerBytes = headerBytes.slice();
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    return fail(`the ${n}-byte header is not valid UTF-8: the file is corrupt: re-download it`);
  }
  let header: unknown;
  try {
    header = JSON.parse(text, markFloats);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    return fail(`the header is not valid JSON (${why}): the file is corrupt: re-download it`);
  }
  if (!isPlainObject(header)) {
    return fail(`the header must be a JSON object of tensors, but it is ${describe(header)}`);
  }

  const dataLength = total - 8 - n;
  let metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const name of Object.keys(header)) {
    const value = header[name];
    if (!name.isWellFormed()) fail(`a tensor name contains an unpaired UTF-16 surrogate escape`);
    if (name === "__metadata__") {
      metadata = parseMetadata(value, fail);
      continue;
    }
    entries.push(parseEntry(name, value, fail));
  }

  // Tile check, in offset order as the official implementation sorts them.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let start = 0;
  let previous: Entry | null = null;
  for (const e of entries) {
    if (e.begin !== start) {
      const where = `tensor ${quote(e.name)}: data_offsets [${e.begin}, ${e.end}]`;
      if (e.end > dataLength) {
        fail(
          `${where} point outside the data area, which is ${dataLength} bytes long; the header ` +
            `and the data do not belong together: the file is corrupt`,
        );
      }
      if (e.begin < start) {
        fail(
          `${where} overlap tensor ${
            quote(previous!.name)
          }, which ends at ${start}: tensors must ` +
            `not share bytes`,
        );
      }
      fail(
        `${where} leave a gap of ${e.begin - start} bytes after ` +
          (previous === null ? "the start of the data area" : `tensor ${quote(previous.name)}`) +
          `: tensors must cover the data area with no holes`,
      );
    }
    start = e.end;
    previous = e;
  }
  if (start > dataLength) {
    const cut = entries.find((e) => e.end > dataLength)!;
    fail(
      `the header describes ${start} bytes of tensor data but only ${dataLength} follow it ` +
        `(tensor ${quote(cut.name)} is cut off at byte ${dataLength - cut.begin} of ` +
        `${cut.end - cut.begin}): the file looks truncated: re-download it`,
    );
  }
  if (start < dataLength) {
    fail(
      `${dataLength - start} dangling bytes after the last tensor: the tensors cover ${start} ` +
        `of the ${dataLength}-byte data area, and safetensors files must end with their last ` +
        `tensor (the file may have been appended to or is not what its header says)`,
    );
  }
  return new ParsedSafetensors(fileName, bytes, n, metadata, entries);
}

function parseMetadata(value: unknown, fail: (what: string) => never): Record<string, string> {
  if (value === null) return {};
  if (!isPlainObject(value)) {
    return fail(`__metadata__ must be an object of strings, but it is ${describe(value)}`);
  }
  const out: [string, string][] = [];
  for (const key of Object.keys(value)) {
    const v = value[key];
    if (typeof v !== "string") {
      fail(`__metadata__ entry ${quote(key)} must be a string, but it is ${describe(v)}`);
    }
    if (!key.isWellFormed() || !v.isWellFormed()) {
      fail(`__metadata__ entry ${quote(key)} contains an unpaired UTF-16 surrogate escape`);
    }
    out.push([key, v]);
  }
  return Object.fromEntries(out);
}

function parseEntry(name: string, value: unknown, fail: (what: string) => never): Entry {
  const where = `tensor ${quote(name)}`;
  if (!isPlainObject(value)) {
    return fail(
      `${where} must be described by an object with dtype, shape and data_offsets, but it is ` +
        describe(value),
    );
  }
  for (const field of ["dtype", "shape", "data_offsets"]) {
    if (!Object.hasOwn(value, field)) fail(`${where} is missing its "${field}" field`);
  }
  const dtype = value.dtype;
  if (typeof dtype !== "string") {
    return fail(`${where}: dtype must be a string, not ${describe(dtype)}`);
  }
  if (!Object.hasOwn(DTYPE_BITS, dtype)) {
    fail(
      `${where} has unknown dtype ${quote(dtype)}; safetensors dtypes are ` +
        `${Object.keys(DTYPE_BITS).join(", ")}`,
    );
  }
  const bits = DTYPE_BITS[dtype];
  const shape = value.shape;
  if (!Array.isArray(shape)) {
    return fail(`${where}: shape must be an array, not ${describe(shape)}`);
  }
  for (const d of shape) {
    if (typeof d !== "number" || !Number.isInteger(d) || d < 0) {
      fail(`${where}: shape must hold non-negative integers, but it contains ${describe(d)}`);
    }
    if (!Number.isSafeInteger(d)) fail(`${where}: shape dimension ${d} is too large`);
  }
  const offsets = value.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2) {
    return fail(`${where}: data_offsets must be an array [begin, end], not ${describe(offsets)}`);
  }
  const [begin, end] = offsets;
  for (const o of offsets) {
    if (typeof o !== "number" || !Number.isInteger(o) || o < 0) {
      fail(
        `${where}: data_offsets must be non-negative integers, but they contain ${describe(o)}`,
      );
    }
    if (!Number.isSafeInteger(o)) fail(`${where}: data_offset ${o} is too large`);
  }
  if (end < begin) {
    fail(`${where}: data_offsets [${begin}, ${end}] end before they begin`);
  }
  // Element count, with the official implementation's 64-bit overflow rule. Any count above
  // 2^53 cannot match a real byte length anyway, so inexact floats past that point are harmless.
  let count = 1;
  for (const d of shape as number[]) {
    count *= d;
    if (count >= U64_LIMIT) {
      fail(
        `${where}: shape [${shape}] has more elements than a 64-bit count can hold: the header ` +
          `is corrupt`,
      );
    }
  }
  const byteLength = end - begin;
  if (Number.isSafeInteger(count * bits) && (count * bits) % 8 !== 0) {
    fail(`${where}: ${count} elements of ${dtype} do not fill a whole number of bytes`);
  }
  const expected = (count * bits) / 8;
  if (expected !== byteLength) {
    fail(
      `${where}: shape [${shape}] of ${dtype} needs ${
        Number.isSafeInteger(expected) ? expected : expected.toExponential(3)
      } bytes, but data_offsets [${begin}, ${end}] span ${byteLength}: the header is corrupt`,
    );
  }
  return { name, dtype: dtype as Dtype, shape: [...(shape as number[])], begin, end };
}

function checkShape(name: string, shape: readonly number[]): void {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new SafetensorsError(
      `cannot write tensor ${quote(name)}: shape [${shape}] must hold non-negative integers`,
    );
  }
}

/** Options of {@link writeSafetensors}. */
export interface WriteOptions {
  /** Stored dtype of every tensor (default `"F32"`); F16 and BF16 round to nearest even. */
  dtype?: FloatDtype;
  /** The `__metadata__` string map, e.g. `{ format: "pt" }` as PyTorch checkpoints carry. */
  metadata?: Record<string, string>;
}

/** One tensor's place in a file laid out by {@link allocateSafetensors}. */
export interface TensorSlot {
  /** Tensor name. */
  name: string;
  /** Stored dtype. */
  dtype: FloatDtype;
  /** Shape. */
  shape: number[];
  /** Offset of its first byte from the start of the file. */
  byteOffset: number;
  /** Its length in bytes. */
  byteLength: number;
}

/**
 * Lays out a safetensors file and allocates it in one buffer: header written, data area zeroed,
 * tensors in the order given. Fill each tensor's bytes (little-endian) at its `byteOffset`. The
 * header is padded with spaces so that the data area starts at a multiple of 8, as the official
 * writer does, so F32 tensors whose offsets are multiples of 4 can be filled through a
 * `Float32Array` view. Used by {@link writeSafetensors} and by generators that write weights in
 * place.
 *
 * @example
 * ```ts
 * import { allocateSafetensors } from "./safetensors.ts";
 * const { bytes, slots } = allocateSafetensors([{ name: "b", dtype: "F32", shape: [3] }]);
 * new Float32Array(bytes.buffer, slots[0].byteOffset, 3).set([1, 2, 3]);
 * ```
 */
export function allocateSafetensors(
  specs: readonly { name: string; dtype: FloatDtype; shape: readonly number[] }[],
  metadata?: Record<string, string>,
): { bytes: Uint8Array; slots: TensorSlot[] } {
  const seen = new Set<string>();
  const entries: [string, unknown][] = [];
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") {
        throw new SafetensorsError(`cannot write metadata ${quote(k)}: values must be strings`);
      }
    }
    entries.push(["__metadata__", { ...metadata }]);
  }
  let offset = 0;
  const relative: { begin: number; end: number }[] = [];
  for (const { name, dtype, shape } of specs) {
    if (name === "__metadata__") {
      throw new SafetensorsError(
        `cannot write a tensor named "__metadata__": the name is reserved`,
      );
    }
    if (seen.has(name)) throw new SafetensorsError(`cannot write tensor ${quote(name)} twice`);
    seen.add(name);
    if (!Object.hasOwn(FLOAT_DTYPE_BYTES, dtype)) {
      throw new SafetensorsError(`cannot write tensor ${quote(name)} as dtype ${String(dtype)}`);
    }
    checkShape(name, shape);
    const length = numel(shape) * FLOAT_DTYPE_BYTES[dtype];
    entries.push([name, { dtype, shape: [...shape], data_offsets: [offset, offset + length] }]);
    relative.push({ begin: offset, end: offset + length });
    offset += length;
  }
  // Built by hand so keys keep their order (a JS object would move integer-like names first).
  const text = `{${
    entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")
  }}`;
  const json = new TextEncoder().encode(text);
  const n = Math.ceil(json.length / 8) * 8;
  const bytes = new Uint8Array(8 + n + offset);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, n % 2 ** 32, true);
  view.setUint32(4, Math.floor(n / 2 ** 32), true);
  bytes.set(json, 8);
  bytes.fill(0x20, 8 + json.length, 8 + n);
  const slots = specs.map(({ name, dtype, shape }, i) => ({
    name,
    dtype,
    shape: [...shape],
    byteOffset: 8 + n + relative[i].begin,
    byteLength: relative[i].end - relative[i].begin,
  }));
  return { bytes, slots };
}

/**
 * Serialises float32 tensors to a safetensors file, in the order given (a record's insertion
 * order, or the array's order). All tensors are stored in `opts.dtype` (default `"F32"`); the
 * header is padded with spaces to a multiple of 8 bytes as the official writer does.
 *
 * @example
 * ```ts
 * import { writeSafetensors } from "./safetensors.ts";
 * const bytes = writeSafetensors(
 *   [["wte.weight", { data: new Float32Array(6), shape: [3, 2] }]],
 *   { dtype: "BF16", metadata: { format: "pt" } },
 * );
 * await Deno.writeFile(`${await Deno.makeTempDir()}/model.safetensors`, bytes);
 * ```
 */
export function writeSafetensors(
  tensors: Record<string, Tensor> | [string, Tensor][],
  opts: WriteOptions = {},
): Uint8Array {
  const dtype = opts.dtype ?? "F32";
  const list = Array.isArray(tensors) ? tensors : Object.entries(tensors);
  for (const [name, t] of list) {
    checkShape(name, t.shape);
    const n = numel(t.shape);
    if (!(t.data instanceof Float32Array) || t.data.length !== n) {
      throw new SafetensorsError(
        `cannot write tensor ${quote(name)}: shape [${t.shape}] needs ${n} float32 values, ` +
          `got ${t.data instanceof Float32Array ? t.data.length : describe(t.data)}`,
      );
    }
  }
  const { bytes, slots } = allocateSafetensors(
    list.map(([name, t]) => ({ name, dtype, shape: t.shape })),
    opts.metadata,
  );
  for (let i = 0; i < list.length; i++) {
    const slot = slots[i];
    encodeFloats(
      dtype,
      list[i][1].data,
      bytes.subarray(slot.byteOffset, slot.byteOffset + slot.byteLength),
    );
  }
  return bytes;
}
