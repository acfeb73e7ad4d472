// Sparse autoencoder activations (op codes 70-72): JumpReLU, gated ReLU and
// top-k along rows. Plain scalar loops: they are elementwise or one pass over
// a row, a small cost beside the encoder's matmul.

// out[r, j] = x[r, j] if x[r, j] > threshold[j] and x[r, j] > 0, else 0
// (SAELens's JumpReLU: relu(x) * (x > threshold), strict), for rows
// [rowStart, rowEnd) of n floats. x and out may alias.
export function jumpRelu(
  x: usize, threshold: usize, out: usize, n: i32, rowStart: i32, rowEnd: i32,
): void {
  for (let r = rowStart; r < rowEnd; r++) {
    const row = <usize>r * <usize>n << 2;
    for (let j = 0; j < n; j++) {
      const v = load<f32>(x + row + (<usize>j << 2));
      const t = load<f32>(threshold + (<usize>j << 2));
      store<f32>(out + row + (<usize>j << 2), v > t && v > 0 ? v : 0);
    }
  }
}

// Gated SAE: rows of gateMag hold [gate (n floats) | magnitude (n floats)];
// out[r, j] = gate > 0 ? max(magnitude, 0) : 0, for rows [rowStart, rowEnd).
export function gatedRelu(
  gateMag: usize, out: usize, n: i32, rowStart: i32, rowEnd: i32,
): void {
  for (let r = rowStart; r < rowEnd; r++) {
    const g = gateMag + (<usize>r * <usize>n << 3);
    const m = g + (<usize>n << 2);
    const o = out + (<usize>r * <usize>n << 2);
    for (let j = 0; j < n; j++) {
      const b = <usize>j << 2;
      const v = load<f32>(m + b);
      store<f32>(o + b, load<f32>(g + b) > 0 && v > 0 ? v : 0);
    }
  }
}

// Top-k along rows: out[r, j] = max(x[r, j], 0) for the k largest x[r, j] of
// the row (ties at the k-th value: the first indices), 0 elsewhere; NaN is
// never selected. 1 <= k <= n; x and out must not overlap (the first k floats
// of each out row hold a min-heap of the k largest values while it is built).
export function topkRows(
  x: usize, out: usize, n: i32, k: i32, rowStart: i32, rowEnd: i32,
): void {
  for (let r = rowStart; r < rowEnd; r++) {
    const xr = x + (<usize>r * <usize>n << 2);
    const h = out + (<usize>r * <usize>n << 2);
    // min-heap of size `size` in h[0..k)
    let size = 0;
    for (let j = 0; j < n; j++) {
      const v = load<f32>(xr + (<usize>j << 2));
      if (v != v) continue;
      if (size < k) {
        // sift up
        let i = size++;
        while (i > 0) {
          const p = (i - 1) >> 1;
          const pv = load<f32>(h + (<usize>p << 2));
          if (pv <= v) break;
          store<f32>(h + (<usize>i << 2), pv);
          i = p;
        }
        store<f32>(h + (<usize>i << 2), v);
      } else if (v > load<f32>(h)) {
        // replace the root, sift down
        let i = 0;
        for (;;) {
          const a = 2 * i + 1;
          if (a >= k) break;
          let c = a;
          let cv = load<f32>(h + (<usize>a << 2));
          if (a + 1 < k) {
            const bv = load<f32>(h + (<usize>(a + 1) << 2));
            if (bv < cv) {
              c = a + 1;
              cv = bv;
            }
          }
          if (cv >= v) break;
          store<f32>(h + (<usize>i << 2), cv);
          i = c;
        }
        store<f32>(h + (<usize>i << 2), v);
      }
    }
    // the k-th largest value (or, with fewer than k numbers, the smallest)
    const tk: f32 = size > 0 ? load<f32>(h) : <f32>Infinity;
    let above = 0;
    for (let j = 0; j < n; j++) if (load<f32>(xr + (<usize>j << 2)) > tk) above++;
    let ties = (size < k ? size : k) - above;
    for (let j = 0; j < n; j++) {
      const v = load<f32>(xr + (<usize>j << 2));
      let keep = v > tk;
      if (!keep && v == tk && ties > 0) {
        keep = true;
        ties--;
      }
      store<f32>(h + (<usize>j << 2), keep && v > 0 ? v : 0);
    }
  }
}
