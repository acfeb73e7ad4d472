/**
 * NumPy's `.npy` arrays and `.npz` archives (a zip of `.npy` files, as `np.savez` writes them:
 * Gemma Scope's `params.npz`), read strictly: the header's Python dict literal is parsed by a
 * small grammar (`descr`, `fortran_order`, `shape`, nothing else, never evaluated), the dtype must
 * be a little-endian float, and the data's size must match the shape exactly.
 * @module
 */
import { NpyError } from "../core/errors.ts";
import { f16BitsToF32 } from "../core/dtype.ts";
import type { Tensor } from "../core/tensor.ts";
import { readZip } from "./zip.ts";

/** Largest header an `.npy` file may have (NumPy itself writes well under 1 KiB). */
export const MAX_NPY_HEADER_BYTES = 65536;
/** Largest number of dimensions accepted (NumPy's own limit is 64). */
const MAX_DIMS = 32;

/** What an `.npy` header says. */
export interface NpyHeader {
  /** NumPy's type string, e.g. `<f4`. */
  descr: string;
  /** Whether the data is stored column-major. */
  fortranOrder: boolean;
  /** The array's shape (`[]` for a scalar). */
  shape: number[];
  /** Offset of the data from the start of the file. */
  dataOffset: number;
}

const ITEM_SIZES: Readonly<Record<string, number>> = { "<f2": 2, "<f4": 4, "<f8": 8 };

/**
 * Parses the header of an `.npy` file (format versions 1, 2 and 3). Throws an {@link NpyError}
 * for a bad magic string, a truncated or oversized header, or a header that is not exactly the
 * dict NumPy writes.
 *
 * @example
 * ```ts
 * import { parseNpyHeader } from "./npy.ts";
 * const header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
 * const text = header.padEnd(118, " ") + "\n";
 * const bytes = new Uint8Array(10 + text.length);
 * bytes.set([0x93, 78, 85, 77, 80, 89, 1, 0, text.length & 255, text.length >> 8]);
 * bytes.set(new TextEncoder().encode(text), 10);
 * parseNpyHeader(bytes).shape; // [2, 3]
 * ```
 */
export function parseNpyHeader(bytes: Uint8Array, fileName = "array.npy"): NpyHeader {
  const fail = (what: string): never => {
    throw new NpyError(`${fileName}: ${what}`);
  };
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) {
    fail("not a NumPy .npy array (no \\x93NUMPY magic string at the start)");
  }
  const major = bytes[6];
  if (major < 1 || major > 3) fail(`.npy format version ${major}.${bytes[7]} is not 1, 2 or 3`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number, start: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    start = 10;
  } else {
    if (bytes.length < 12) fail("truncated before the header length");
    headerLen = view.getUint32(8, true);
    start = 12;
  }
  if (headerLen > MAX_NPY_HEADER_BYTES) {
    fail(`the header length says ${headerLen} bytes, over the ${MAX_NPY_HEADER_BYTES} accepted`);
  }
  if (start + headerLen > bytes.length) {
    fail(`the header (${headerLen} bytes) runs past the end of the file (${bytes.length} bytes)`);
  }
  const text = new TextDecoder(major === 3 ? "utf-8" : "latin1", { fatal: true }).decode(
    bytes.subarray(start, start + headerLen),
  );
  const dict = parseHeaderDict(text, fail);
  return { ...dict, dataOffset: start + headerLen };
}

/**
 * The grammar of the header NumPy writes: `{'descr': '<f4', 'fortran_order': False, 'shape':
 * (2, 3), }` in any key order, optional trailing commas, then spaces and a newline. Anything else
 * is refused.
 */
function parseHeaderDict(
  text: string,
  fail: (what: string) => never,
): { descr: string; fortranOrder: boolean; shape: number[] } {
  let i = 0;
  const ws = () => {
    while (i < text.length && (text[i] === " " || text[i] === "\t")) i++;
  };
  const expect = (c: string) => {
    ws();
    if (text[i] !== c) {
      fail(`malformed header at character ${i}: expected '${c}' in ${JSON.stringify(text)}`);
    }
    i++;
  };
  const str = (): string => {
    ws();
    const q = text[i];
    if (q !== "'" && q !== '"') fail(`malformed header at character ${i}: expected a string`);
    const end = text.indexOf(q, i + 1);
    if (end < 0 || end - i > 64) fail(`malformed header: unterminated string at character ${i}`);
    const s = text.slice(i + 1, end);
    if (s.includes("\\")) fail("malformed header: escapes in strings are not accepted");
    i = end + 1;
    return s;
  };
  const values: Record<string, unknown> = {};
  expect("{");
  for (;;) {
    ws();
    if (text[i] === "}") {
      i++;
      break;
    }
    const key = str();
    if (key !== "descr" && key !== "fortran_order" && key !== "shape") {
      fail(`the header has key '${key}'; an .npy header has only descr, fortran_order and shape`);
    }
    if (key in values) fail(`the header repeats key '${key}'`);
    expect(":");
    ws();
    if (key === "descr") values.descr = str();
    else if (key === "fortran_order") {
      if (text.startsWith("True", i)) {
        values.fortran_order = true;
        i += 4;
      } else if (text.startsWith("False", i)) {
        values.fortran_order = false;
        i += 5;
      } else fail("malformed header: fortran_order must be True or False");
    } else {
      expect("(");
      const shape: number[] = [];
      for (;;) {
        ws();
        if (text[i] === ")") {
          i++;
          break;
        }
        const m = /^[0-9]{1,16}L?/.exec(text.slice(i, i + 17));
        if (!m) fail(`malformed header: a shape entry at character ${i} is not an integer`);
        shape.push(Number(m![0].replace("L", "")));
        i += m![0].length;
        if (shape.length > MAX_DIMS) fail(`the shape has more than ${MAX_DIMS} dimensions`);
        ws();
        if (text[i] === ",") i++;
        else if (text[i] !== ")") fail(`malformed header: expected ',' or ')' at character ${i}`);
      }
      values.shape = shape;
    }
    ws();
    if (text[i] === ",") i++;
    else if (text[i] !== "}") fail(`malformed header: expected ',' or '}' at character ${i}`);
  }
  if (!/^[ \t]*\n?[ \t]*$/.test(text.slice(i).replaceAll("\0", ""))) {
    fail("malformed header: text after the closing '}'");
  }
  for (const k of ["descr", "fortran_order", "shape"]) {
    if (!(k in values)) fail(`the header has no '${k}'`);
  }
  return {
    descr: values.descr as string,
    fortranOrder: values.fortran_order as boolean,
    shape: values.shape as number[],
  };
}

/**
 * Reads an `.npy` array as a float32 tensor (C order; a Fortran-ordered array is transposed into
 * it). Accepts little-endian float16, float32 and float64 (`<f2`, `<f4`, `<f8`); anything else,
 * and a data size that differs from what the shape needs, is an {@link NpyError}.
 *
 * @example
 * ```ts
 * import { parseNpy } from "./npy.ts";
 * const text = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }".padEnd(117) + "\n";
 * const bytes = new Uint8Array(10 + text.length + 8);
 * bytes.set([0x93, 78, 85, 77, 80, 89, 1, 0, text.length, 0]);
 * bytes.set(new TextEncoder().encode(text), 10);
 * new DataView(bytes.buffer).setFloat32(10 + text.length + 4, 2.5, true);
 * parseNpy(bytes).data; // Float32Array [0, 2.5]
 * ```
 */
export function parseNpy(bytes: Uint8Array, fileName = "array.npy"): Tensor {
  const h = parseNpyHeader(bytes, fileName);
  const fail = (what: string): never => {
    throw new NpyError(`${fileName}: ${what}`);
  };
  const item = ITEM_SIZES[h.descr];
  if (item === undefined) {
    fail(
      `dtype '${h.descr}' is not a little-endian float (<f2, <f4, <f8); save the array as ` +
        `float32`,
    );
  }
  let n = 1;
  for (const d of h.shape) {
    n *= d;
    if (n > 2 ** 40) fail(`the shape (${h.shape}) has more elements than any file could hold`);
  }
  const expected = n * item;
  const got = bytes.length - h.dataOffset;
  if (got !== expected) {
    fail(
      `the shape (${h.shape}) of '${h.descr}' needs ${expected} data bytes, the file has ${got}: ` +
        `it is truncated or corrupt`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + h.dataOffset, expected);
  const data = new Float32Array(n);
  if (item === 4) { for (let i = 0; i < n; i++) data[i] = view.getFloat32(4 * i, true); }
  else if (item === 8) { for (let i = 0; i < n; i++) data[i] = view.getFloat64(8 * i, true); }
  else for (let i = 0; i < n; i++) data[i] = f16BitsToF32(view.getUint16(2 * i, true));
  const shape = [...h.shape];
  if (!h.fortranOrder || shape.length < 2) return { data, shape };
  return { data: fortranToC(data, shape), shape };
}

/** A column-major array of `shape` rewritten row-major. */
function fortranToC(src: Float32Array, shape: number[]): Float32Array {
  const out = new Float32Array(src.length);
  const rank = shape.length;
  const fStride = new Array<number>(rank);
  let s = 1;
  for (let d = 0; d < rank; d++) {
    fStride[d] = s;
    s *= shape[d];
  }
  const idx = new Array<number>(rank).fill(0);
  for (let i = 0; i < out.length; i++) {
    let off = 0;
    for (let d = 0; d < rank; d++) off += idx[d] * fStride[d];
    out[i] = src[off];
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

/**
 * Reads an `.npz` archive (`np.savez`: a stored, uncompressed zip of `<name>.npy` entries) as
 * float32 tensors by name (the `.npy` suffix dropped). Zip problems and compressed entries are
 * {@link NpyError}s too, so a caller catches one error type.
 *
 * @example
 * ```ts ignore
 * import { parseNpz } from "./npy.ts";
 * const arrays = parseNpz(await Deno.readFile("params.npz"), "params.npz");
 * arrays.get("W_enc")!.shape; // [d_model, d_sae]
 * ```
 */
export function parseNpz(bytes: Uint8Array, fileName = "arrays.npz"): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  try {
    const zip = readZip(bytes, fileName);
    for (const entry of zip.names()) {
      if (!entry.endsWith(".npy")) {
        throw new NpyError(`${fileName}: entry ${entry} is not an .npy array`);
      }
      const name = entry.slice(0, -4);
      if (out.has(name)) throw new NpyError(`${fileName}: array ${name} appears twice`);
      out.set(name, parseNpy(zip.read(entry), `${fileName}:${entry}`));
    }
  } catch (e) {
    if (e instanceof NpyError) throw e;
    if (e instanceof Error && e.name === "PickleError") {
      throw new NpyError(`${e.message} (an .npz must be an uncompressed zip: np.savez)`, {
        cause: e,
      });
    }
    throw e;
  }
  return out;
}
