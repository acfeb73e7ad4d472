/**
 * Half-precision (IEEE binary16) weight storage, shared by both backends: rounding a matrix to
 * f16 and refusing values beyond its range.
 *
 * Rounding is to nearest, ties to even, through the platform's `Float16Array` (ES2025: Deno 2.9,
 * Chromium 135, Firefox 129, Safari 18.2), whose conversion from a number rounds that way; where
 * the runtime lacks it, `core/dtype.ts`'s `f32ToF16Bits`, the same rounding written out, does it
 * (the two are tested bit for bit against each other). The range check comes first: a finite
 * weight of magnitude 65520 or more would round to infinity, which no later arithmetic recovers,
 * so it is an error that says to use f32 or bf16 (float32's range) instead.
 *
 * @example
 * ```ts
 * import { roundToF16 } from "./f16.ts";
 * roundToF16(new Float32Array([1 / 3, 65504])); // Float32Array [0.333251953125, 65504]
 * ```
 * @module
 */
import { f16BitsToF32, f32ToF16Bits } from "../core/dtype.ts";
import { KernelError } from "../core/errors.ts";

/** The largest finite f16 value. */
export const F16_MAX = 65504;

/**
 * The smallest magnitude that rounds to infinity: halfway between 65504 and 65536 (the next
 * power of two, f16's first out-of-range value), where the tie goes to the even 65536 = inf.
 */
const F16_OVERFLOW = 65520;

/** Whether the runtime has `Float16Array` (older browsers do not). */
const HAS_PLATFORM_F16 = typeof globalThis.Float16Array === "function";

/**
 * Throws unless every finite value of the row-major [k, n] `data` rounds to a finite f16.
 * Infinities and NaN pass through (as they do in f32 and bf16 storage).
 * @throws {KernelError} naming the first such value, its place, and what to do.
 *
 * @example
 * ```ts
 * import { checkF16Range } from "./f16.ts";
 * checkF16Range(new Float32Array([65519, -1e-9]), 1, 2); // fine: 65504 and -0
 * // checkF16Range(new Float32Array([7e4]), 1, 1) throws KernelError
 * ```
 */
export function checkF16Range(data: Float32Array, k: number, n: number): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if ((v >= F16_OVERFLOW || v <= -F16_OVERFLOW) && v !== Infinity && v !== -Infinity) {
      const r = Math.floor(i / Math.max(n, 1)), c = i - r * n;
      throw new KernelError(
        `uploadMatrix: the weight ${v} at row ${r}, column ${c} of a [${k}, ${n}] matrix is ` +
          `beyond float16's range (largest ${F16_MAX}) and would become infinite: store the ` +
          `weights as "f32" or "bf16" (weightDtype), which keep float32's range`,
      );
    }
  }
}

/**
 * The f16 bit patterns of `src`, rounded to nearest even, written into `dst` from index `at`.
 * (No range check: see {@linkcode checkF16Range}.) `platform: false` uses the written-out
 * rounding even where `Float16Array` exists (the tests compare the two).
 *
 * @example
 * ```ts
 * import { f16BitsInto } from "./f16.ts";
 * const dst = new Uint16Array(2);
 * f16BitsInto(new Float32Array([1, -2]), dst, 0); // dst = [0x3c00, 0xc000]
 * ```
 */
export function f16BitsInto(
  src: Float32Array,
  dst: Uint16Array,
  at: number,
  platform: boolean = HAS_PLATFORM_F16,
): void {
  if (platform) {
    new Float16Array(dst.buffer, dst.byteOffset, dst.length).set(src, at);
    return;
  }
  for (let i = 0; i < src.length; i++) dst[at + i] = f32ToF16Bits(src[i]);
}

/**
 * `data` rounded to f16 (nearest even) and widened back to f32, exactly: the values an f16
 * weight holds, for a backend that computes on f32 storage.
 * `k` and `n` only name the place of an out-of-range value; `platform` as in
 * {@linkcode f16BitsInto}.
 * @throws {KernelError} a finite value beyond f16's range ({@linkcode checkF16Range}).
 *
 * @example
 * ```ts
 * import { roundToF16 } from "./f16.ts";
 * roundToF16(new Float32Array([0.1])); // Float32Array [0.0999755859375]
 * ```
 */
export function roundToF16(
  data: Float32Array,
  k = 1,
  n = data.length,
  platform: boolean = HAS_PLATFORM_F16,
): Float32Array {
  checkF16Range(data, k, n);
  const out = new Float32Array(data.length);
  if (platform) {
    out.set(new Float16Array(data));
    return out;
  }
  for (let i = 0; i < data.length; i++) out[i] = f16BitsToF32(f32ToF16Bits(data[i]));
  return out;
}
