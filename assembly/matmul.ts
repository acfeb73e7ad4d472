// Matrix multiply C[m,n] = A[m,k] @ B[k,n] over a packed B.
//
// Packed layout: B is cut into panels of NR = 16 columns; panel p holds
// k rows of 16 floats (columns p*16 .. p*16+15), contiguous, zero-padded past n.
// So packedSize(k, n) = ceil(n / 16) * 16 * k floats.
//
// Per output element the operation sequence is always the same:
//   acc = (accumulate ? C : 0) + (bias ? bias[j] : 0)
//   for kk in 0..k-1: acc = madd(A[i,kk], B[kk,j], acc)
// whichever micro-kernel (4-row block or single row, full or tail panel)
// computes it, so any split of rows or panels across threads gives
// bit-identical results.

import { madd } from "./simd";

// @ts-ignore: decorator
@inline const NR: i32 = 16;

export function packedSize(k: i32, n: i32): i32 {
  return ((n + NR - 1) / NR) * NR * k;
}

export function packB(src: usize, dst: usize, k: i32, n: i32): void {
  const panels = (n + NR - 1) / NR;
  for (let p = 0; p < panels; p++) {
    const c0 = p * NR;
    const nc = min(NR, n - c0);
    let d = dst + (<usize>p * <usize>k * NR << 2);
    for (let kk = 0; kk < k; kk++) {
      const s = src + ((<usize>kk * <usize>n + <usize>c0) << 2);
      if (nc == NR) {
        v128.store(d, v128.load(s), 0);
        v128.store(d, v128.load(s, 16), 16);
        v128.store(d, v128.load(s, 32), 32);
        v128.store(d, v128.load(s, 48), 48);
      } else {
        for (let j = 0; j < NR; j++) {
          store<f32>(d + (<usize>j << 2), j < nc ? load<f32>(s + (<usize>j << 2)) : 0);
        }
      }
      d += NR << 2;
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

// 4 rows x 16 columns. a: first A row, lda/ldc in bytes, b: panel start.
// @ts-ignore: decorator
@inline
function kernel4x16(a: usize, lda: usize, b: usize, k: i32, c: usize, ldc: usize, bias: usize, accumulate: bool): void {
  const c1 = c + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
  let x00 = f32x4.splat(0), x01 = x00, x02 = x00, x03 = x00;
  let x10 = x00, x11 = x00, x12 = x00, x13 = x00;
  let x20 = x00, x21 = x00, x22 = x00, x23 = x00;
  let x30 = x00, x31 = x00, x32 = x00, x33 = x00;
  if (accumulate) {
    x00 = v128.load(c, 0); x01 = v128.load(c, 16); x02 = v128.load(c, 32); x03 = v128.load(c, 48);
    x10 = v128.load(c1, 0); x11 = v128.load(c1, 16); x12 = v128.load(c1, 32); x13 = v128.load(c1, 48);
    x20 = v128.load(c2, 0); x21 = v128.load(c2, 16); x22 = v128.load(c2, 32); x23 = v128.load(c2, 48);
    x30 = v128.load(c3, 0); x31 = v128.load(c3, 16); x32 = v128.load(c3, 32); x33 = v128.load(c3, 48);
  }
  if (bias) {
    const b0 = v128.load(bias, 0), b1 = v128.load(bias, 16), b2 = v128.load(bias, 32), b3 = v128.load(bias, 48);
    x00 = f32x4.add(x00, b0); x01 = f32x4.add(x01, b1); x02 = f32x4.add(x02, b2); x03 = f32x4.add(x03, b3);
    x10 = f32x4.add(x10, b0); x11 = f32x4.add(x11, b1); x12 = f32x4.add(x12, b2); x13 = f32x4.add(x13, b3);
    x20 = f32x4.add(x20, b0); x21 = f32x4.add(x21, b1); x22 = f32x4.add(x22, b2); x23 = f32x4.add(x23, b3);
    x30 = f32x4.add(x30, b0); x31 = f32x4.add(x31, b1); x32 = f32x4.add(x32, b2); x33 = f32x4.add(x33, b3);
  }
  let a0 = a, a1 = a + lda, a2 = a1 + lda, a3 = a2 + lda;
  let bp = b;
  for (let kk = 0; kk < k; kk++) {
    const b0 = v128.load(bp, 0), b1 = v128.load(bp, 16), b2 = v128.load(bp, 32), b3 = v128.load(bp, 48);
    let s = v128.load32_splat(a0);
    x00 = madd(s, b0, x00); x01 = madd(s, b1, x01); x02 = madd(s, b2, x02); x03 = madd(s, b3, x03);
    s = v128.load32_splat(a1);
    x10 = madd(s, b0, x10); x11 = madd(s, b1, x11); x12 = madd(s, b2, x12); x13 = madd(s, b3, x13);
    s = v128.load32_splat(a2);
    x20 = madd(s, b0, x20); x21 = madd(s, b1, x21); x22 = madd(s, b2, x22); x23 = madd(s, b3, x23);
    s = v128.load32_splat(a3);
    x30 = madd(s, b0, x30); x31 = madd(s, b1, x31); x32 = madd(s, b2, x32); x33 = madd(s, b3, x33);
    a0 += 4; a1 += 4; a2 += 4; a3 += 4;
    bp += 64;
  }
  v128.store(c, x00, 0); v128.store(c, x01, 16); v128.store(c, x02, 32); v128.store(c, x03, 48);
  v128.store(c1, x10, 0); v128.store(c1, x11, 16); v128.store(c1, x12, 32); v128.store(c1, x13, 48);
  v128.store(c2, x20, 0); v128.store(c2, x21, 16); v128.store(c2, x22, 32); v128.store(c2, x23, 48);
  v128.store(c3, x30, 0); v128.store(c3, x31, 16); v128.store(c3, x32, 32); v128.store(c3, x33, 48);
}

// @ts-ignore: decorator
@inline
function kernel1x16(a: usize, b: usize, k: i32, c: usize, bias: usize, accumulate: bool): void {
  let x0 = f32x4.splat(0), x1 = x0, x2 = x0, x3 = x0;
  if (accumulate) {
    x0 = v128.load(c, 0); x1 = v128.load(c, 16); x2 = v128.load(c, 32); x3 = v128.load(c, 48);
  }
  if (bias) {
    x0 = f32x4.add(x0, v128.load(bias, 0)); x1 = f32x4.add(x1, v128.load(bias, 16));
    x2 = f32x4.add(x2, v128.load(bias, 32)); x3 = f32x4.add(x3, v128.load(bias, 48));
  }
  let a0 = a;
  let bp = b;
  for (let kk = 0; kk < k; kk++) {
    const s = v128.load32_splat(a0);
    x0 = madd(s, v128.load(bp, 0), x0); x1 = madd(s, v128.load(bp, 16), x1);
    x2 = madd(s, v128.load(bp, 32), x2); x3 = madd(s, v128.load(bp, 48), x3);
    a0 += 4;
    bp += 64;
  }
  v128.store(c, x0, 0); v128.store(c, x1, 16); v128.store(c, x2, 32); v128.store(c, x3, 48);
}

// Rows [rowStart, rowEnd) and column panels [panelStart, panelEnd) of C.
// lda, ldc in floats. bias: 0 or pointer to n floats. scratch: 64 floats
// (a 4 x 16 tile) used for the last, partial panel.
export function matmul(
  a: usize, bp: usize, c: usize, m: i32, k: i32, n: i32,
  lda: i32, ldc: i32, bias: usize, accumulate: i32,
  rowStart: i32, rowEnd: i32, panelStart: i32, panelEnd: i32, scratch: usize,
): void {
  const acc = accumulate != 0;
  const ldaB = <usize>lda << 2;
  const ldcB = <usize>ldc << 2;
  const panelBytes = <usize>k * NR << 2;
  for (let p = panelStart; p < panelEnd; p++) {
    const c0 = p * NR;
    const nc = min(NR, n - c0);
    const b = bp + <usize>p * panelBytes;
    const biasP: usize = bias ? bias + (<usize>c0 << 2) : 0;
    if (nc == NR) {
      let i = rowStart;
      for (; i + 4 <= rowEnd; i += 4) {
        kernel4x16(a + <usize>i * ldaB, ldaB, b, k, c + <usize>i * ldcB + (<usize>c0 << 2), ldcB, biasP, acc);
      }
      for (; i < rowEnd; i++) {
        kernel1x16(a + <usize>i * ldaB, b, k, c + <usize>i * ldcB + (<usize>c0 << 2), biasP, acc);
      }
    } else {
      // Partial panel: build the initial tile (same arithmetic as the
      // full-panel path: (C or 0) + bias), run the kernel in accumulate mode
      // on it, copy the valid columns back.
      for (let i = rowStart; i < rowEnd; i++) {
        const crow = c + <usize>i * ldcB + (<usize>c0 << 2);
        for (let j = 0; j < NR; j++) {
          let v: f32 = 0;
          if (j < nc) {
            if (acc) v = load<f32>(crow + (<usize>j << 2));
            if (bias) v = v + load<f32>(biasP + (<usize>j << 2));
          }
          store<f32>(scratch + (<usize>j << 2), v);
        }
        kernel1x16(a + <usize>i * ldaB, b, k, scratch, 0, true);
        for (let j = 0; j < nc; j++) {
          store<f32>(crow + (<usize>j << 2), load<f32>(scratch + (<usize>j << 2)));
        }
      }
    }
  }
}
