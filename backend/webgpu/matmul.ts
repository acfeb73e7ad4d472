/**
 * Tiled matrix products on WebGPU: C = A B (+ bias) (+ C) and C = A B^T (+ C), with B one column
 * block of a {@linkcode GpuMatrix} in f32, bf16 or f16 (two per u32, widened to f32 in registers:
 * f16 by WGSL's core `unpack2x16float`, on every adapter, so f16 storage needs no `shader-f16`).
 * Each workgroup of 16 x 16 invocations computes a 64 x 64 tile of C, 4 x 4 per invocation, from
 * 64 x 16 and 16 x 64 tiles of A and B staged in workgroup memory. Every element of C is one f32
 * sum over the inner dimension in order, products added one at a time (the WebAssembly kernels'
 * order too, in four interleaved lanes there), so the two backends differ by the rounding of
 * partial sums only.
 *
 * Why f16 is storage only, even where the adapter has `shader-f16`: half-precision arithmetic
 * would round every product and partial sum to 11 significant bits (a dot product of 768 terms
 * loses about 768 x 2^-11 of its magnitude, far beyond float32's 768 x 2^-24), and
 * interpretability reads small differences of activations (patching deltas, attributions) that
 * such sums would drown. Widening each weight exactly to f32 keeps the f32 model's arithmetic on
 * f16-rounded weights: half the memory and bandwidth, and results that compare across backends.
 * @module
 */
import type { GpuDevice } from "./device.ts";
import { bindStore, type Bound, type GpuMatrix } from "./arrays.ts";
import { header } from "./wgsl.ts";

const TILE = 64, KT = 16;

type Storage = "f32" | "bf16" | "f16";

function shader(trans: boolean, dtype: Storage): string {
  // B(kk, j): element (kk, j) of the product's right-hand side, from the block's storage
  // (row-major [rows, words] of W); transposed reads W[j, kk].
  const at = (r: string, c: string) =>
    dtype === "f32"
      ? `b[p.bBase + (${r}) * p.ldb + (${c})]`
      : `${
        dtype === "bf16" ? "bf" : "hf"
      }(b[p.bBase + (${r}) * p.ldb + ((${c}) >> 1u)], (${c}) & 1u)`;
  const getB = trans ? at("j", "kk") : at("kk", "j");
  return header(
    [
      "m: u32",
      "K: u32",
      "N: u32",
      "lda: u32",
      "ldc: u32",
      "aBase: u32",
      "cBase: u32",
      "ldb: u32",
      "bBase: u32",
      "aCol: u32",
      "cCol: u32",
      "hasBias: u32",
      "biasBase: u32",
      "accumulate: u32",
    ],
    ["a", "b", "c", "bias"],
    { b: dtype === "f32" ? "f32" : "u32" },
  ) + /* wgsl */ `
fn bf(w: u32, hi: u32) -> f32 {
  return select(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u), hi == 1u);
}
// unpack2x16float: the f32 value of each binary16 half, exactly (f16 subnormals are normal f32
// numbers; tests/weights_f16_test.ts checks them bit for bit, flushing would zero them).
fn hf(w: u32, hi: u32) -> f32 {
  let h = unpack2x16float(w);
  return select(h.x, h.y, hi == 1u);
}
fn getB(kk: u32, j: u32) -> f32 { return ${getB}; }
var<workgroup> As: array<f32, ${TILE * KT}>;
var<workgroup> Bs: array<f32, ${TILE * KT}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let item = wg.x + wg.y * nwg.x;
  let tilesN = (p.N + ${TILE - 1}u) / ${TILE}u;
  let row0 = (item / tilesN) * ${TILE}u;
  let col0 = (item % tilesN) * ${TILE}u;
  let tx = lid % 16u;
  let ty = lid / 16u;
  var acc: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }
  for (var k0 = 0u; k0 < p.K; k0 += ${KT}u) {
    for (var e = lid; e < ${TILE * KT}u; e += 256u) {
      // A tile: [64 rows][16 k]; B tile: [16 k][64 cols]
      let ar = e / ${KT}u;
      let ak = e % ${KT}u;
      let gr = row0 + ar;
      let gk = k0 + ak;
      As[e] = select(0.0, a[p.aBase + gr * p.lda + p.aCol + gk], gr < p.m && gk < p.K);
      let bk = e / ${TILE}u;
      let bc = e % ${TILE}u;
      let kk = k0 + bk;
      let j = col0 + bc;
      Bs[e] = select(0.0, getB(kk, j), kk < p.K && j < p.N);
    }
    workgroupBarrier();
    let kn = min(${KT}u, p.K - k0);
    for (var kk = 0u; kk < kn; kk++) {
      var av: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) { av[i] = As[(ty * 4u + i) * ${KT}u + kk]; }
      for (var jj = 0u; jj < 4u; jj++) {
        let bv = Bs[kk * ${TILE}u + tx * 4u + jj];
        for (var i = 0u; i < 4u; i++) { acc[i * 4u + jj] = acc[i * 4u + jj] + av[i] * bv; }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let r = row0 + ty * 4u + i;
    if (r >= p.m) { continue; }
    for (var jj = 0u; jj < 4u; jj++) {
      let j = col0 + tx * 4u + jj;
      if (j >= p.N) { continue; }
      let ci = p.cBase + r * p.ldc + p.cCol + j;
      var v = acc[i * 4u + jj];
      if (p.hasBias == 1u) { v = bias[p.biasBase + p.cCol + j] + v; }
      if (p.accumulate == 1u) { v = c[ci] + v; }
      c[ci] = v;
    }
  }
}
`;
}

const SHADERS = new Map<string, string>();
function code(trans: boolean, dtype: Storage): string {
  const key = `${trans}${dtype}`;
  let s = SHADERS.get(key);
  if (!s) SHADERS.set(key, s = shader(trans, dtype));
  return s;
}

/** Arguments of {@linkcode matmul}. */
export interface MatmulArgs {
  a: Bound;
  w: GpuMatrix;
  c: Bound;
  m: number;
  lda: number;
  ldc: number;
  bias?: Bound;
  accumulate: boolean;
  transposed: boolean;
}

/**
 * C[m, n] = A[m, k] W (+ bias) (+ C), or transposed: C[m, k] = A[m, n] W^T (+ C), one dispatch
 * per column block of W (the transposed product sums over the blocks: the first one writes or
 * accumulates, the others accumulate).
 */
export function matmul(dev: GpuDevice, x: MatmulArgs, dummy: Bound): void {
  const { w, m } = x;
  if (m === 0) return;
  w.blocks.forEach((store, bi) => {
    const cols = w.cols(bi), c0 = bi * w.blockCols;
    const K = x.transposed ? cols : w.k;
    const N = x.transposed ? w.k : cols;
    const groups = Math.ceil(m / TILE) * Math.ceil(N / TILE);
    const bias = x.bias ?? dummy;
    dev.dispatch(
      code(x.transposed, w.dtype),
      [
        m,
        K,
        N,
        x.lda,
        x.ldc,
        x.a.base,
        x.c.base,
        w.words(bi),
        0,
        x.transposed ? c0 : 0,
        x.transposed ? 0 : c0,
        x.bias ? 1 : 0,
        bias.base,
        (x.accumulate || (x.transposed && bi > 0)) ? 1 : 0,
      ],
      [x.a.b, bindStore(store), x.c.b, bias.b],
      groups,
    );
  });
}
