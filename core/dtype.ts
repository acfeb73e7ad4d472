/**
 * Conversions between float32 and the two 16-bit float formats safetensors files carry: IEEE
 * binary16 (`F16`) and bfloat16 (`BF16`). Widening to float32 is exact; narrowing rounds to
 * nearest, ties to even, as PyTorch's `.half()` and `.bfloat16()` do. NaN stays NaN (quiet),
 * infinities and signed zeros are kept, and f16 subnormals are produced and read exactly.
 *
 * @example
 * ```ts
 * import { f16BitsToF32, f32ToF16Bits } from "./dtype.ts";
 * f32ToF16Bits(1.0); // 0x3c00
 * f16BitsToF32(0x3c00); // 1
 * ```
 * @module
 */

/** The float dtypes this library can read and write, as safetensors spells them. */
export type FloatDtype = "F32" | "F16" | "BF16";

/** Bytes per element of each float dtype. */
export const FLOAT_DTYPE_BYTES: Readonly<Record<FloatDtype, number>> = Object.freeze({
  F32: 4,
  F16: 2,
  BF16: 2,
});

/** True when the host stores numbers little-endian (safetensors data is little-endian). */
export const HOST_LITTLE_ENDIAN: boolean = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** Float32 bit pattern of an f16 bit pattern (exact). */
function f16ToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal: mant * 2^-24, renormalised into a float32 normal number.
  let e = 113; // float32 biased exponent of 2^-14
  let m = mant;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

let f16Table: Uint32Array | null = null;

/** Float32 bit patterns of all 65536 f16 values, built on first use (256 KiB). */
function f16TableBits(): Uint32Array {
  if (f16Table === null) {
    const t = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) t[h] = f16ToF32Bits(h);
    f16Table = t;
  }
  return f16Table;
}

/**
 * The value of an IEEE binary16 bit pattern (0..0xffff), exactly.
 *
 * @example
 * ```ts
 * import { f16BitsToF32 } from "./dtype.ts";
 * f16BitsToF32(0x0001); // 2^-24, the smallest subnormal
 * f16BitsToF32(0xfc00); // -Infinity
 * ```
 */
export function f16BitsToF32(bits: number): number {
  scratchU32[0] = f16ToF32Bits(bits & 0xffff);
  return scratchF32[0];
}

/**
 * The value of a bfloat16 bit pattern (0..0xffff), exactly (bfloat16 is the top half of a
 * float32).
 *
 * @example
 * ```ts
 * import { bf16BitsToF32 } from "./dtype.ts";
 * bf16BitsToF32(0x3f80); // 1
 * ```
 */
export function bf16BitsToF32(bits: number): number {
  scratchU32[0] = (bits & 0xffff) << 16;
  return scratchF32[0];
}

/** f16 bit pattern of a float32 bit pattern, rounding to nearest even. */
function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) {
    // Infinity, or NaN kept quiet with the top of its payload.
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e = exp - 112; // f16 biased exponent
  if (e >= 0x1f) return sign | 0x7c00; // too large: infinity
  if (e > 0) {
    let half = (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1)) half++; // may carry into inf
    return sign | half;
  }
  // f16 subnormal (or zero): value = full * 2^(exp - 150), in units of 2^-24 that is
  // full >> (126 - exp).
  const shift = 126 - exp;
  if (shift > 24) return sign; // below half the smallest subnormal: +-0
  const full = mant | 0x800000;
  let m = full >>> shift;
  const rest = full & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  if (rest > halfway || (rest === halfway && (m & 1) === 1)) m++; // may become the smallest normal
  return sign | m;
}

/** bfloat16 bit pattern of a float32 bit pattern, rounding to nearest even. */
function f32BitsToBf16(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) {
    return ((x >>> 16) | 0x40) & 0xffff; // NaN: keep it a (quiet) NaN
  }
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * The f16 bit pattern nearest to `value` (first rounded to float32), ties to even. Values beyond
 * the f16 range (65504) become infinities, tiny values become subnormals or signed zeros.
 *
 * @example
 * ```ts
 * import { f32ToF16Bits } from "./dtype.ts";
 * f32ToF16Bits(65520); // 0x7c00 (Infinity: the tie rounds up to even)
 * f32ToF16Bits(-0); // 0x8000
 * ```
 */
export function f32ToF16Bits(value: number): number {
  scratchF32[0] = value;
  return f32BitsToF16(scratchU32[0]);
}

/**
 * The bfloat16 bit pattern nearest to `value` (first rounded to float32), ties to even.
 *
 * @example
 * ```ts
 * import { f32ToBf16Bits } from "./dtype.ts";
 * f32ToBf16Bits(1); // 0x3f80
 * ```
 */
export function f32ToBf16Bits(value: number): number {
  scratchF32[0] = value;
  return f32BitsToBf16(scratchU32[0]);
}

/**
 * Widens little-endian `F32`, `F16` or `BF16` bytes into `out` (exactly). `src` may sit at any
 * byte offset (no alignment needed); its length must be `out.length` times the element size.
 *
 * @example
 * ```ts
 * import { decodeFloats } from "./dtype.ts";
 * const out = new Float32Array(1);
 * decodeFloats("BF16", new Uint8Array([0x80, 0x3f]), out); // out[0] === 1
 * ```
 */
export function decodeFloats(dtype: FloatDtype, src: Uint8Array, out: Float32Array): void {
  const n = out.length;
  if (src.length !== n * FLOAT_DTYPE_BYTES[dtype]) {
    throw new RangeError(
      `decodeFloats: ${src.length} bytes of ${dtype} do not make ${n} values`,
    );
  }
  if (dtype === "F32") {
    if (HOST_LITTLE_ENDIAN) {
      new Uint8Array(out.buffer, out.byteOffset, n * 4).set(src);
    } else {
      const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
    }
    return;
  }
  // Write bit patterns through a Uint32Array so NaN payloads survive unchanged.
  const bits = new Uint32Array(out.buffer, out.byteOffset, n);
  if (dtype === "BF16") {
    for (let i = 0, p = 0; i < n; i++, p += 2) bits[i] = (src[p] | (src[p + 1] << 8)) << 16;
  } else {
    const table = f16TableBits();
    for (let i = 0, p = 0; i < n; i++, p += 2) bits[i] = table[src[p] | (src[p + 1] << 8)];
  }
}

/**
 * Narrows (or copies) float32 values into little-endian `F32`, `F16` or `BF16` bytes in `dst`,
 * rounding to nearest even. `dst` may sit at any byte offset; its length must be `src.length`
 * times the element size.
 *
 * @example
 * ```ts
 * import { encodeFloats } from "./dtype.ts";
 * const dst = new Uint8Array(2);
 * encodeFloats("F16", new Float32Array([1]), dst); // dst = [0x00, 0x3c]
 * ```
 */
export function encodeFloats(dtype: FloatDtype, src: Float32Array, dst: Uint8Array): void {
  const n = src.length;
  if (dst.length !== n * FLOAT_DTYPE_BYTES[dtype]) {
    throw new RangeError(
      `encodeFloats: ${dst.length} bytes of ${dtype} cannot hold ${n} values`,
    );
  }
  if (dtype === "F32") {
    if (HOST_LITTLE_ENDIAN) {
      dst.set(new Uint8Array(src.buffer, src.byteOffset, n * 4));
    } else {
      const view = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
      for (let i = 0; i < n; i++) view.setFloat32(4 * i, src[i], true);
    }
    return;
  }
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  const narrow = dtype === "F16" ? f32BitsToF16 : f32BitsToBf16;
  for (let i = 0, p = 0; i < n; i++, p += 2) {
    const h = narrow(bits[i]);
    dst[p] = h & 0xff;
    dst[p + 1] = h >>> 8;
  }
}
