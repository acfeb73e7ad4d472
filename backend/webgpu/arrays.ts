/**
 * Device arrays and packed matrices of the WebGPU backend, and how a kernel binds them. Each
 * allocation is a GPU buffer of its own; a {@linkcode GpuArray} is a float range of one. A kernel
 * binds the range of the buffer that holds the array (its offset aligned down to the adapter's
 * binding alignment, at most `maxStorageBufferBindingSize` long) and indexes from `base`, the
 * array's first float within that binding.
 * @module
 */
import type { DeviceArray, PackedMatrix, WeightDtype } from "../backend.ts";
import { KernelError } from "../../core/errors.ts";
import { f16BitsInto } from "../f16.ts";
import type { Binding, GpuDevice } from "./device.ts";

/** A GPU buffer and the scope that owns it (null: lives as long as the backend). */
export class GpuStore {
  alive = true;
  constructor(readonly buffer: GPUBuffer, readonly owner: { open: boolean } | null) {}

  /** Refuses a store whose scope was disposed. */
  check(what: string): void {
    if (!this.alive || (this.owner && !this.owner.open)) {
      throw new KernelError(`a ${what} was used after its scope was disposed`);
    }
  }
}

/** Floats [offset, offset + length) of a store. */
export class GpuArray implements DeviceArray {
  constructor(readonly store: GpuStore, readonly offset: number, readonly length: number) {}

  at(offset: number, length: number = this.length - offset): DeviceArray {
    if (
      !Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 ||
      offset + length > this.length
    ) {
      throw new KernelError(
        `at(${offset}, ${length}) is outside a device array of ${this.length} floats`,
      );
    }
    return new GpuArray(this.store, this.offset + offset, length);
  }
}

/**
 * A [k, n] weight matrix: column blocks of at most `blockCols` columns, each a row-major
 * [k, cols] buffer (f32, or bf16 or f16 packed two per u32 along a row, the even column in the
 * low half), so that every block fits one binding.
 */
export class GpuMatrix implements PackedMatrix {
  constructor(
    readonly k: number,
    readonly n: number,
    readonly dtype: WeightDtype,
    readonly blockCols: number,
    readonly blocks: GpuStore[],
    readonly owner: { open: boolean } | null,
  ) {}

  /** Columns of block b. */
  cols(b: number): number {
    return Math.min(this.blockCols, this.n - b * this.blockCols);
  }

  /** Row length of block b in 32-bit words. */
  words(b: number): number {
    return this.dtype === "f32" ? this.cols(b) : Math.ceil(this.cols(b) / 2);
  }
}

/** A binding and the index of the array's first float within it. */
export interface Bound {
  b: Binding;
  base: number;
}

/**
 * Binds the `floats` values of `x` from its start (default all of it).
 * @throws {KernelError} the range does not fit one binding.
 */
export function bind(dev: GpuDevice, x: GpuArray, floats = x.length): Bound {
  const start = x.offset * 4;
  const offset = start - (start % dev.align);
  const size = Math.min(x.store.buffer.size - offset, dev.maxBinding - (dev.maxBinding % 4));
  if (start + floats * 4 > offset + size) {
    throw new KernelError(
      `a kernel would read ${floats} floats of one array (${floats * 4} bytes), more than one ` +
        `WebGPU binding holds (${dev.maxBinding} bytes): use smaller batches`,
    );
  }
  return { b: { buffer: x.store.buffer, offset, size }, base: (start - offset) / 4 };
}

/** The binding of a whole store. */
export function bindStore(s: GpuStore): Binding {
  return { buffer: s.buffer, offset: 0, size: s.buffer.size };
}

/**
 * Round to nearest even bfloat16, two per u32 along each row of a [k, cols] block (NaN stays a
 * quiet NaN): the rounding of the WebAssembly kernels' `toBf16`.
 */
export function packBf16(
  data: Float32Array,
  k: number,
  n: number,
  c0: number,
  cols: number,
): Uint32Array {
  const words = Math.ceil(cols / 2);
  const src = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint32Array(k * words);
  for (let r = 0; r < k; r++) {
    for (let j = 0; j < cols; j++) {
      const u = src[r * n + c0 + j];
      const h = (u & 0x7fffffff) > 0x7f800000
        ? ((u >>> 16) | 0x40)
        : ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
      out[r * words + (j >> 1)] |= (j & 1) ? (h << 16) >>> 0 : h;
    }
  }
  return out;
}

/**
 * Round to nearest even IEEE half precision, two per u32 along each row of a [k, cols] block (the
 * even column in the low half, as `unpack2x16float` reads it; an odd last column's high half is
 * zero). The caller range-checks the matrix first (`checkF16Range`): out-of-range values would
 * become infinities here.
 */
export function packF16(
  data: Float32Array,
  k: number,
  n: number,
  c0: number,
  cols: number,
): Uint32Array {
  const words = Math.ceil(cols / 2);
  const out = new Uint32Array(k * words);
  const halves = new Uint16Array(out.buffer); // little-endian: half 2w is word w's low half
  for (let r = 0; r < k; r++) {
    f16BitsInto(data.subarray(r * n + c0, r * n + c0 + cols), halves, r * words * 2);
  }
  return out;
}
