// Matrix multiply C[m,n] = A[m,k] @ B[k,n] over a packed B.
//
// Why this shape: V8 (as embedded in Deno) compiles every wasm memory access
// with an explicit bounds check (a few extra instructions each), so the
// micro-kernel is chosen to do as few loads per multiply-add as possible
// within the 15 usable xmm registers: a 4 x 8 tile held in 8 accumulators,
// fed per k step by one 16-byte load of 4 packed A values (splatted lane by
// lane with shuffles, which need no bounds check) and two 16-byte loads of B.
//
// Packed B: panels of NR = 8 columns; panel p holds k rows of 8 floats
// (columns p*8 .. p*8+7), contiguous, zero-padded past n.
// packedSize(k, n) = ceil(n / 8) * 8 * k floats.
//
// Packed bf16 B (packBBf16, read by matmulBf16): the same panel order with
// each value stored as its bf16 rounding (the upper 16 bits of the f32,
// rounded to nearest even): 16 bytes per panel row instead of 32.
// packedSizeBf16(k, n) = packedSize(k, n) / 2 f32 slots (packedSize is a
// multiple of 8). The kernels widen each 8-value row in registers (bf16 -> f32
// is a 16-bit left shift) and run exactly the f32 arithmetic, so matmulBf16
// equals matmul over the bf16-rounded matrix, bit for bit.
//
// Packed A (per call, in the caller-provided scratch): for each block of MC
// rows and KC columns of A, groups of 4 rows stored as [kk][4] (zero rows pad
// the last group).
//
// Per output element the operation sequence is always the same:
//   acc = (accumulate ? C : 0) + (bias ? bias[j] : 0)
//   for kk in 0..k-1: acc = madd(A[i,kk], B[kk,j], acc)
// (k-blocking stores and reloads acc exactly as f32), whichever row block,
// column panel, edge tile or thread computes it, so any split of rows or
// panels across threads gives bit-identical results.

import { madd } from "./simd";

// @ts-ignore: decorator
@inline const NR: i32 = 8;
// @ts-ignore: decorator
@inline const MR: i32 = 4;
// Rows of A packed at a time and depth of one k block (packed A: MC*KC floats).
// @ts-ignore: decorator
@inline const MC: i32 = 128;
// @ts-ignore: decorator
@inline const KC: i32 = 1024;
// Panels of B^T that matmulBT builds at once (see there).
// @ts-ignore: decorator
@inline const GT: i32 = 8;
// Scratch layout: [tile: MR*NR floats][packed A: MC*KC floats][GT panels of
// B^T: GT*KC*NR floats, matmulBT only]
// @ts-ignore: decorator
@inline const TILE_BYTES: usize = 128;

// Bytes of scratch one matmul call needs (per thread).
export function matmulScratchBytes(): i32 {
  return <i32>TILE_BYTES + MC * KC * 4 + GT * KC * NR * 4;
}

export function packedSize(k: i32, n: i32): i32 {
  return ((n + NR - 1) / NR) * NR * k;
}

export function packB(src: usize, dst: usize, k: i32, n: i32): void {
  const panels = (n + NR - 1) / NR;
  for (let p = 0; p < panels; p++) {
    const c0 = p * NR;
    const nc = min(NR, n - c0);
    let d = dst + (<usize>p * <usize>k * NR << 2);
    let s = src + (<usize>c0 << 2);
    const rowB = <usize>n << 2;
    if (nc == NR) {
      for (let kk = 0; kk < k; kk++) {
        v128.store(d, v128.load(s), 0);
        v128.store(d, v128.load(s, 16), 16);
        d += NR << 2;
        s += rowB;
      }
    } else {
      for (let kk = 0; kk < k; kk++) {
        for (let j = 0; j < NR; j++) {
          store<f32>(d + (<usize>j << 2), j < nc ? load<f32>(s + (<usize>j << 2)) : 0);
        }
        d += NR << 2;
        s += rowB;
      }
    }
  }
}

// f32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN.
// @ts-ignore: decorator
@inline
function toBf16(x: f32): u32 {
  const u = reinterpret<u32>(x);
  if ((u & 0x7fffffff) > 0x7f800000) return (u >> 16) | 0x40;
  return (u + 0x7fff + ((u >> 16) & 1)) >> 16;
}

// f32 slots (4 bytes each) of a bf16-packed [k, n] matrix.
export function packedSizeBf16(k: i32, n: i32): i32 {
  return packedSize(k, n) >> 1;
}

// Packs row-major f32 B [k, n] at src into bf16 panels at dst.
export function packBBf16(src: usize, dst: usize, k: i32, n: i32): void {
  const panels = (n + NR - 1) / NR;
  const rowB = <usize>n << 2;
  for (let p = 0; p < panels; p++) {
    const c0 = p * NR;
    const nc = min(NR, n - c0);
    let d = dst + (<usize>p * <usize>k * NR << 1);
    let s = src + (<usize>c0 << 2);
    for (let kk = 0; kk < k; kk++) {
      for (let j = 0; j < NR; j++) {
        store<u16>(d + (<usize>j << 1), j < nc ? <u16>toBf16(load<f32>(s + (<usize>j << 2))) : 0);
      }
      d += NR << 1;
      s += rowB;
    }
  }
}

// Inverse of packBBf16: writes the bf16 values, widened to f32, as row-major [k, n].
export function unpackBBf16(src: usize, dst: usize, k: i32, n: i32): void {
  const panels = (n + NR - 1) / NR;
  for (let p = 0; p < panels; p++) {
    const c0 = p * NR;
    const nc = min(NR, n - c0);
    let s = src + (<usize>p * <usize>k * NR << 1);
    for (let kk = 0; kk < k; kk++) {
      const d = dst + ((<usize>kk * <usize>n + <usize>c0) << 2);
      for (let j = 0; j < nc; j++) {
        store<u32>(d + (<usize>j << 2), <u32>load<u16>(s + (<usize>j << 1)) << 16);
      }
      s += NR << 1;
    }
  }
}

export function unpackB(src: usize, dst: usize, k: i32, n: i32): void {
  const panels = (n + NR - 1) / NR;
  for (let p = 0; p < panels; p++) {
    const c0 = p * NR;
    const nc = min(NR, n - c0);
    let s = src + (<usize>p * <usize>k * NR << 2);
    for (let kk = 0; kk < k; kk++) {
      const d = dst + ((<usize>kk * <usize>n + <usize>c0) << 2);
      for (let j = 0; j < nc; j++) {
        store<f32>(d + (<usize>j << 2), load<f32>(s + (<usize>j << 2)));
      }
      s += NR << 2;
    }
  }
}

// Packs rows [0, rows) x columns [0, kc) of A (row stride ldaB bytes) into
// groups of 4 rows laid out [kk][4]; rows past `rows` in the last group are 0.
function packA(a: usize, ldaB: usize, rows: i32, kc: i32, dst: usize): void {
  const kc4 = kc & ~3;
  let d = dst;
  for (let r0 = 0; r0 < rows; r0 += MR) {
    const a0 = a + <usize>r0 * ldaB;
    if (r0 + MR <= rows) {
      const a1 = a0 + ldaB, a2 = a1 + ldaB, a3 = a2 + ldaB;
      let kk = 0;
      for (; kk < kc4; kk += 4) {
        const o = <usize>kk << 2;
        const r0v = v128.load(a0 + o), r1v = v128.load(a1 + o);
        const r2v = v128.load(a2 + o), r3v = v128.load(a3 + o);
        const t0 = i32x4.shuffle(r0v, r1v, 0, 4, 1, 5);
        const t1 = i32x4.shuffle(r2v, r3v, 0, 4, 1, 5);
        const t2 = i32x4.shuffle(r0v, r1v, 2, 6, 3, 7);
        const t3 = i32x4.shuffle(r2v, r3v, 2, 6, 3, 7);
        v128.store(d, i32x4.shuffle(t0, t1, 0, 1, 4, 5), 0);
        v128.store(d, i32x4.shuffle(t0, t1, 2, 3, 6, 7), 16);
        v128.store(d, i32x4.shuffle(t2, t3, 0, 1, 4, 5), 32);
        v128.store(d, i32x4.shuffle(t2, t3, 2, 3, 6, 7), 48);
        d += 64;
      }
      for (; kk < kc; kk++) {
        const o = <usize>kk << 2;
        store<f32>(d, load<f32>(a0 + o), 0);
        store<f32>(d, load<f32>(a1 + o), 4);
        store<f32>(d, load<f32>(a2 + o), 8);
        store<f32>(d, load<f32>(a3 + o), 12);
        d += 16;
      }
    } else {
      const nr = rows - r0;
      for (let kk = 0; kk < kc; kk++) {
        const o = <usize>kk << 2;
        for (let r = 0; r < MR; r++) {
          store<f32>(d + (<usize>r << 2), r < nr ? load<f32>(a0 + <usize>r * ldaB + o) : 0);
        }
        d += 16;
      }
    }
  }
}

// Row kk of a B panel as two f32x4 (columns 0-3, 4-7): T = f32 reads 32
// bytes; T = u16 (bf16) reads 16 bytes and widens each value by a shift.
// @ts-ignore: decorator
@inline
function loadB0<T>(b: usize, v: v128): v128 {
  if (sizeof<T>() == 2) return i32x4.shl(i32x4.extend_low_i16x8_u(v), 16);
  return v128.load(b, 0);
}
// @ts-ignore: decorator
@inline
function loadB1<T>(b: usize, v: v128): v128 {
  if (sizeof<T>() == 2) return i32x4.shl(i32x4.extend_high_i16x8_u(v), 16);
  return v128.load(b, 16);
}

// 4 x 8 tile: C rows c, c+ldc, c+2ldc, c+3ldc (bytes), 8 columns.
// fromC: start from C (else from 0); bias (if non-zero) is then added.
// @ts-ignore: decorator
@inline
function kernel4x8<T>(ap: usize, bp: usize, kc: i32, c: usize, ldc: usize, fromC: bool, bias: usize): void {
  const c1 = c + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
  let x00 = f32x4.splat(0), x01 = x00, x10 = x00, x11 = x00;
  let x20 = x00, x21 = x00, x30 = x00, x31 = x00;
  if (fromC) {
    x00 = v128.load(c, 0); x01 = v128.load(c, 16);
    x10 = v128.load(c1, 0); x11 = v128.load(c1, 16);
    x20 = v128.load(c2, 0); x21 = v128.load(c2, 16);
    x30 = v128.load(c3, 0); x31 = v128.load(c3, 16);
  }
  if (bias) {
    const b0 = v128.load(bias, 0), b1 = v128.load(bias, 16);
    x00 = f32x4.add(x00, b0); x01 = f32x4.add(x01, b1);
    x10 = f32x4.add(x10, b0); x11 = f32x4.add(x11, b1);
    x20 = f32x4.add(x20, b0); x21 = f32x4.add(x21, b1);
    x30 = f32x4.add(x30, b0); x31 = f32x4.add(x31, b1);
  }
  let a = ap, b = bp;
  for (let kk = 0; kk < kc; kk++) {
    const av = v128.load(a);
    const bv = sizeof<T>() == 2 ? v128.load(b) : av;
    const b0 = loadB0<T>(b, bv), b1 = loadB1<T>(b, bv);
    let s = i32x4.shuffle(av, av, 0, 0, 0, 0);
    x00 = madd(s, b0, x00); x01 = madd(s, b1, x01);
    s = i32x4.shuffle(av, av, 1, 1, 1, 1);
    x10 = madd(s, b0, x10); x11 = madd(s, b1, x11);
    s = i32x4.shuffle(av, av, 2, 2, 2, 2);
    x20 = madd(s, b0, x20); x21 = madd(s, b1, x21);
    s = i32x4.shuffle(av, av, 3, 3, 3, 3);
    x30 = madd(s, b0, x30); x31 = madd(s, b1, x31);
    a += 16;
    b += NR * sizeof<T>();
  }
  v128.store(c, x00, 0); v128.store(c, x01, 16);
  v128.store(c1, x10, 0); v128.store(c1, x11, 16);
  v128.store(c2, x20, 0); v128.store(c2, x21, 16);
  v128.store(c3, x30, 0); v128.store(c3, x31, 16);
}

// 1 x 8 tile for a lone last row (row 0 of a packed group of 4): the same
// per-element arithmetic as kernel4x8, a quarter of the work.
// @ts-ignore: decorator
@inline
function kernel1x8<T>(ap: usize, bp: usize, kc: i32, c: usize, fromC: bool, bias: usize): void {
  let x0 = f32x4.splat(0), x1 = x0;
  if (fromC) {
    x0 = v128.load(c, 0); x1 = v128.load(c, 16);
  }
  if (bias) {
    x0 = f32x4.add(x0, v128.load(bias, 0)); x1 = f32x4.add(x1, v128.load(bias, 16));
  }
  let a = ap, b = bp;
  for (let kk = 0; kk < kc; kk++) {
    const s = v128.load32_splat(a);
    const bv = sizeof<T>() == 2 ? v128.load(b) : s;
    x0 = madd(s, loadB0<T>(b, bv), x0);
    x1 = madd(s, loadB1<T>(b, bv), x1);
    a += 16;
    b += NR * sizeof<T>();
  }
  v128.store(c, x0, 0); v128.store(c, x1, 16);
}

// One column panel (nc <= 8 valid columns) of C over mc rows of packed A:
// full 4 x 8 tiles, lone last rows, and edge tiles through a 4 x 8 scratch
// tile, all with the same per-element arithmetic. c points at the panel's
// first element of the block's first row.
// @ts-ignore: decorator
@inline
function panelTiles<T>(
  apack: usize, b: usize, kc: i32, mc: i32, nc: i32,
  c: usize, ldcB: usize, fromC: bool, biasP: usize, tile: usize,
): void {
  for (let r0 = 0; r0 < mc; r0 += MR) {
    const ap = apack + (<usize>r0 * <usize>kc << 2);
    const cp = c + <usize>r0 * ldcB;
    const nr = min(MR, mc - r0);
    if (nr == MR && nc == NR) {
      kernel4x8<T>(ap, b, kc, cp, ldcB, fromC, biasP);
    } else if (nr == 1 && nc == NR) {
      kernel1x8<T>(ap, b, kc, cp, fromC, biasP);
    } else {
      // Edge tile: the same arithmetic through a 4 x 8 scratch tile.
      for (let r = 0; r < MR; r++) {
        for (let j = 0; j < NR; j++) {
          let v: f32 = 0;
          if (r < nr && j < nc) {
            if (fromC) v = load<f32>(cp + <usize>r * ldcB + (<usize>j << 2));
            if (biasP) v = v + load<f32>(biasP + (<usize>j << 2));
          }
          store<f32>(tile + (<usize>(r * NR + j) << 2), v);
        }
      }
      kernel4x8<T>(ap, b, kc, tile, NR << 2, true, 0);
      for (let r = 0; r < nr; r++) {
        for (let j = 0; j < nc; j++) {
          store<f32>(cp + <usize>r * ldcB + (<usize>j << 2), load<f32>(tile + (<usize>(r * NR + j) << 2)));
        }
      }
    }
  }
}

// Rows [rowStart, rowEnd) and column panels [panelStart, panelEnd) of C.
// lda, ldc in floats. bias: 0 or pointer to n floats.
// scratch: matmulScratchBytes() bytes, private to the calling thread.
// @ts-ignore: decorator
@inline
function matmulT<T>(
  a: usize, bp: usize, c: usize, m: i32, k: i32, n: i32,
  lda: i32, ldc: i32, bias: usize, accumulate: i32,
  rowStart: i32, rowEnd: i32, panelStart: i32, panelEnd: i32, scratch: usize,
): void {
  const acc = accumulate != 0;
  const ldaB = <usize>lda << 2;
  const ldcB = <usize>ldc << 2;
  const tile = scratch;
  const apack = scratch + TILE_BYTES;
  for (let pc = 0; pc < k; pc += KC) {
    const kc = min(KC, k - pc);
    const first = pc == 0;
    const fromC = !first || acc;
    for (let ic = rowStart; ic < rowEnd; ic += MC) {
      const mc = min(MC, rowEnd - ic);
      packA(a + <usize>ic * ldaB + (<usize>pc << 2), ldaB, mc, kc, apack);
      for (let p = panelStart; p < panelEnd; p++) {
        const c0 = p * NR;
        const nc = min(NR, n - c0);
        const b = bp + (<usize>p * <usize>k + <usize>pc) * NR * sizeof<T>();
        const biasP: usize = first && bias ? bias + (<usize>c0 << 2) : 0;
        panelTiles<T>(apack, b, kc, mc, nc, c + <usize>ic * ldcB + (<usize>c0 << 2), ldcB, fromC, biasP, tile);
      }
    }
  }
}

// C = A @ B over f32 panels (packB).
export function matmul(
  a: usize, bp: usize, c: usize, m: i32, k: i32, n: i32,
  lda: i32, ldc: i32, bias: usize, accumulate: i32,
  rowStart: i32, rowEnd: i32, panelStart: i32, panelEnd: i32, scratch: usize,
): void {
  matmulT<f32>(a, bp, c, m, k, n, lda, ldc, bias, accumulate, rowStart, rowEnd, panelStart, panelEnd, scratch);
}

// C = A @ B over bf16 panels (packBBf16); same arguments and arithmetic as matmul.
export function matmulBf16(
  a: usize, bp: usize, c: usize, m: i32, k: i32, n: i32,
  lda: i32, ldc: i32, bias: usize, accumulate: i32,
  rowStart: i32, rowEnd: i32, panelStart: i32, panelEnd: i32, scratch: usize,
): void {
  matmulT<u16>(a, bp, c, m, k, n, lda, ldc, bias, accumulate, rowStart, rowEnd, panelStart, panelEnd, scratch);
}

// ---- C = A @ B^T over the same packed B (backward passes: dX = dY W^T) ----
//
// B is packed [k, n] as above; C[m, k] = A[m, n] @ B^T, so the inner
// dimension is B's n and C's column panels are groups of 8 rows of B. Rather
// than keep a second, transposed copy of every weight (as much memory again),
// each k block of C's panels is transposed from B's panels into 8-wide
// panels of B^T in scratch (4 x 4 blocks transposed in registers) and the
// forward's micro-kernels run on them. GT = 8 panels are built at once, so
// each of B's panels is read in runs of GT * 8 rows (2 KB for f32) rather
// than 8 rows (256 bytes) spread a whole panel apart. They are rebuilt for
// every block of MC rows: kc * 8 values moved per kc * mc * 8 multiply-adds.
// Per element the arithmetic is the forward kernel's on B^T (acc = C or 0,
// then madd in n order), so the split into row blocks, panels or threads
// never changes a bit, and matmulBT(A, pack(B)) equals matmul(A, pack(B^T))
// exactly.

// Row kk of a B panel as columns [4 half, 4 half + 4): f32 loads 16 bytes;
// bf16 loads the row's 8 values and widens half of them.
// @ts-ignore: decorator
@inline
function loadHalf<T>(row: usize, half: i32): v128 {
  if (sizeof<T>() == 2) {
    const v = v128.load(row);
    return half == 0 ? i32x4.shl(i32x4.extend_low_i16x8_u(v), 16) : i32x4.shl(i32x4.extend_high_i16x8_u(v), 16);
  }
  return half == 0 ? v128.load(row, 0) : v128.load(row, 16);
}

// Panels [q0, q1) of B^T (B rows 8 q0 .. 8 q1 - 1, zero past k) for inner
// indices [pc, pc + kc): panel q - q0 at bt + (q - q0) KC NR floats holds
// bt[jj][r] = B[8q + r, pc + jj], rounded up to whole panels of B (B is
// zero-padded past n).
// @ts-ignore: decorator
@inline
function transposePanels<T>(bp: usize, k: i32, q0: i32, q1: i32, pc: i32, kc: i32, bt: usize): void {
  const rowB = <usize>NR * sizeof<T>();
  const p0 = pc / NR;
  const panels = (kc + NR - 1) / NR;
  const zero = f32x4.splat(0);
  for (let pi = 0; pi < panels; pi++) {
    const src = bp + (<usize>(p0 + pi) * <usize>k) * rowB;
    for (let q = q0; q < q1; q++) {
      const r0 = q * NR;
      const nr = min(NR, k - r0);
      const s0 = src + <usize>r0 * rowB;
      const dst = bt + ((<usize>(q - q0) * KC + <usize>pi * NR) * NR << 2);
      // Four 4 x 4 blocks: rows 4 rb .. 4 rb + 3 of B, columns 4 cb .. 4 cb + 3.
      for (let rb = 0; rb < 2; rb++) {
        const base = rb * 4;
        const s = s0 + <usize>base * rowB;
        for (let cb = 0; cb < 2; cb++) {
          const x0 = base < nr ? loadHalf<T>(s, cb) : zero;
          const x1 = base + 1 < nr ? loadHalf<T>(s + rowB, cb) : zero;
          const x2 = base + 2 < nr ? loadHalf<T>(s + 2 * rowB, cb) : zero;
          const x3 = base + 3 < nr ? loadHalf<T>(s + 3 * rowB, cb) : zero;
          const t0 = i32x4.shuffle(x0, x1, 0, 4, 1, 5);
          const t1 = i32x4.shuffle(x2, x3, 0, 4, 1, 5);
          const t2 = i32x4.shuffle(x0, x1, 2, 6, 3, 7);
          const t3 = i32x4.shuffle(x2, x3, 2, 6, 3, 7);
          // row jj = 4 cb + c of the panel holds B rows base .. base + 3 in lanes
          const d = dst + (<usize>(cb * 4 * NR + base) << 2);
          v128.store(d, i32x4.shuffle(t0, t1, 0, 1, 4, 5), 0);
          v128.store(d, i32x4.shuffle(t0, t1, 2, 3, 6, 7), NR * 4);
          v128.store(d, i32x4.shuffle(t2, t3, 0, 1, 4, 5), 2 * NR * 4);
          v128.store(d, i32x4.shuffle(t2, t3, 2, 3, 6, 7), 3 * NR * 4);
        }
      }
    }
  }
}

// Rows [rowStart, rowEnd) and column panels [panelStart, panelEnd) of
// C[m, k] = A[m, n] @ B^T, B packed [k, n]. lda, ldc in floats.
// @ts-ignore: decorator
@inline
function matmulBTT<T>(
  a: usize, bp: usize, c: usize, m: i32, k: i32, n: i32,
  lda: i32, ldc: i32, accumulate: i32,
  rowStart: i32, rowEnd: i32, panelStart: i32, panelEnd: i32, scratch: usize,
): void {
  const acc = accumulate != 0;
  const ldaB = <usize>lda << 2;
  const ldcB = <usize>ldc << 2;
  const tile = scratch;
  const apack = scratch + TILE_BYTES;
  const bt = apack + (<usize>(MC * KC) << 2);
  for (let pc = 0; pc < n; pc += KC) {
    const kc = min(KC, n - pc);
    const fromC = pc > 0 || acc;
    for (let ic = rowStart; ic < rowEnd; ic += MC) {
      const mc = min(MC, rowEnd - ic);
      packA(a + <usize>ic * ldaB + (<usize>pc << 2), ldaB, mc, kc, apack);
      for (let q0 = panelStart; q0 < panelEnd; q0 += GT) {
        const q1 = min(panelEnd, q0 + GT);
        transposePanels<T>(bp, k, q0, q1, pc, kc, bt);
        for (let q = q0; q < q1; q++) {
          const c0 = q * NR;
          const b = bt + (<usize>(q - q0) * KC * NR << 2);
          panelTiles<f32>(apack, b, kc, mc, min(NR, k - c0), c + <usize>ic * ldcB + (<usize>c0 << 2), ldcB, fromC, 0, tile);
        }
      }
    }
  }
}

// C[m, k] = A[m, n] @ B^T over f32 panels of B [k, n] (packB).
export function matmulBT(
  a: usize, bp: usize, c: usize, m: i32, k: i32, n: i32,
  lda: i32, ldc: i32, accumulate: i32,
  rowStart: i32, rowEnd: i32, panelStart: i32, panelEnd: i32, scratch: usize,
): void {
  matmulBTT<f32>(a, bp, c, m, k, n, lda, ldc, accumulate, rowStart, rowEnd, panelStart, panelEnd, scratch);
}

// The same over bf16 panels (packBBf16): each value widened to f32 as it is
// transposed, so it equals matmulBT over the bf16-rounded B bit for bit.
export function matmulBTBf16(
  a: usize, bp: usize, c: usize, m: i32, k: i32, n: i32,
  lda: i32, ldc: i32, accumulate: i32,
  rowStart: i32, rowEnd: i32, panelStart: i32, panelEnd: i32, scratch: usize,
): void {
  matmulBTT<u16>(a, bp, c, m, k, n, lda, ldc, accumulate, rowStart, rowEnd, panelStart, panelEnd, scratch);
}
