// Rotary position embeddings (the rotate-half convention of GPT-NeoX and
// Llama), in place on the query and key columns of fused Q|K|V rows.
//
// Row r holds nHeads heads of dHead floats from column 0 (the query heads,
// then the key heads); in each head only the first rotaryDim dims turn: with
// h = rotaryDim / 2, dims i and i + h form a pair rotated by angle theta_i of
// the row's position:
//   x[i]     <- x[i] cos - x[i + h] sin
//   x[i + h] <- x[i + h] cos + x[i] sin
// cs holds one row of rotaryDim floats per row of x: the cosines of the h
// angles, then their sines (the host computes them for each row's position).
// Products and sums are computed in f64 from the f32 values (the products are
// exact) and rounded once; the SIMD body and the scalar tail do the same
// operations, so any split of rows gives the same bits.

// @ts-ignore: decorator
@inline
function lo(v: v128): v128 { return f64x2.promote_low_f32x4(v); }
// @ts-ignore: decorator
@inline
function hi(v: v128): v128 { return f64x2.promote_low_f32x4(v128.shuffle<i32>(v, v, 2, 3, 2, 3)); }
// @ts-ignore: decorator
@inline
function pack(a: v128, b: v128): v128 {
  return v128.shuffle<i32>(f32x4.demote_f64x2_zero(a), f32x4.demote_f64x2_zero(b), 0, 1, 4, 5);
}

export function rotary(
  x: usize, stride: i32, nHeads: i32, dHead: i32, rotaryDim: i32, cs: usize,
  rowStart: i32, rowEnd: i32,
): void {
  const h = rotaryDim >> 1;
  const hB = <usize>h << 2;
  for (let r = rowStart; r < rowEnd; r++) {
    const row = x + (<usize>r * <usize>stride << 2);
    const cos = cs + (<usize>r * <usize>rotaryDim << 2);
    const sin = cos + hB;
    for (let head = 0; head < nHeads; head++) {
      const a = row + (<usize>(head * dHead) << 2);
      const b = a + hB;
      let i = 0;
      for (; i + 4 <= h; i += 4) {
        const o = <usize>i << 2;
        const av = v128.load(a + o), bv = v128.load(b + o);
        const cv = v128.load(cos + o), sv = v128.load(sin + o);
        const a0 = lo(av), a1 = hi(av), b0 = lo(bv), b1 = hi(bv);
        const c0 = lo(cv), c1 = hi(cv), s0 = lo(sv), s1 = hi(sv);
        v128.store(a + o, pack(
          f64x2.sub(f64x2.mul(a0, c0), f64x2.mul(b0, s0)),
          f64x2.sub(f64x2.mul(a1, c1), f64x2.mul(b1, s1)),
        ));
        v128.store(b + o, pack(
          f64x2.add(f64x2.mul(b0, c0), f64x2.mul(a0, s0)),
          f64x2.add(f64x2.mul(b1, c1), f64x2.mul(a1, s1)),
        ));
      }
      for (; i < h; i++) {
        const o = <usize>i << 2;
        const av = <f64>load<f32>(a + o), bv = <f64>load<f32>(b + o);
        const c = <f64>load<f32>(cos + o), s = <f64>load<f32>(sin + o);
        store<f32>(a + o, <f32>(av * c - bv * s));
        store<f32>(b + o, <f32>(bv * c + av * s));
      }
    }
  }
}
