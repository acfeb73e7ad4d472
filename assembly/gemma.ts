// The kernels Gemma 2 and Gemma 3 add (op codes 25-26 forward, 50-51 backward).
//
// headRmsNorm: Gemma 3's q_norm / k_norm, RMSNorm over each head's dHead
// floats with a weight, in place on the query and key heads of fused Q|K|V
// rows:
//   s = sqrt(mean(x^2) + eps); x <- x / s * w
// (w holds nHeads * dHead floats: one weight per head, so the query heads'
// q_norm and the key heads' k_norm go in one call). Sums and products in f64,
// each output rounded once.
//
// softcap: Gemma's logit softcapping, y = cap tanh(x / cap), and its backward
// dx = dy (1 - tanh(x / cap)^2) from the uncapped x (not from y: near the cap,
// 1 - (y / cap)^2 would lose the derivative's digits to cancellation).

// sum of squares of n floats at x, in f64, in index order.
function sumSquares(x: usize, n: i32): f64 {
  let s: f64 = 0;
  for (let j = 0; j < n; j++) {
    const v = <f64>load<f32>(x + (<usize>j << 2));
    s += v * v;
  }
  return s;
}

// x: rows `stride` floats apart; heads [0, nHeads) of dHead floats from
// column 0 of each row. w: nHeads * dHead floats. scale: 0, or rows * nHeads
// floats receiving each head's s.
export function headRmsNorm(
  x: usize, stride: i32, nHeads: i32, dHead: i32, w: usize, eps: f64, scale: usize,
  rowStart: i32, rowEnd: i32,
): void {
  const fd = <f64>dHead;
  for (let r = rowStart; r < rowEnd; r++) {
    for (let h = 0; h < nHeads; h++) {
      const xr = x + ((<usize>r * <usize>stride + <usize>(h * dHead)) << 2);
      const wr = w + (<usize>(h * dHead) << 2);
      const sc = Math.sqrt(sumSquares(xr, dHead) / fd + eps);
      if (scale) store<f32>(scale + ((<usize>r * <usize>nHeads + <usize>h) << 2), <f32>sc);
      const rs: f64 = 1.0 / sc;
      for (let j = 0; j < dHead; j++) {
        const o = <usize>j << 2;
        store<f32>(xr + o, <f32>(<f64>load<f32>(xr + o) * rs * <f64>load<f32>(wr + o)));
      }
    }
  }
}

// The backward of headRmsNorm: x the norm's input (rows `stride` floats
// apart), g the gradient at its output (rows `gStride` apart, same head
// columns), overwritten with dL/dx:
//   gw = g w; dL/ds = -sum_j gw_j x_j / s^2; dx_j = gw_j / s + dL/ds x_j / (d s)
export function headRmsNormBackward(
  x: usize, stride: i32, g: usize, gStride: i32, nHeads: i32, dHead: i32, w: usize, eps: f64,
  rowStart: i32, rowEnd: i32,
): void {
  const fd = <f64>dHead;
  for (let r = rowStart; r < rowEnd; r++) {
    for (let h = 0; h < nHeads; h++) {
      const xr = x + ((<usize>r * <usize>stride + <usize>(h * dHead)) << 2);
      const gr = g + ((<usize>r * <usize>gStride + <usize>(h * dHead)) << 2);
      const wr = w + (<usize>(h * dHead) << 2);
      const sc = Math.sqrt(sumSquares(xr, dHead) / fd + eps);
      let dot: f64 = 0;
      for (let j = 0; j < dHead; j++) {
        const o = <usize>j << 2;
        dot += <f64>load<f32>(gr + o) * <f64>load<f32>(wr + o) * <f64>load<f32>(xr + o);
      }
      const dS = -dot / (sc * sc);
      const k = dS / (fd * sc);
      for (let j = 0; j < dHead; j++) {
        const o = <usize>j << 2;
        const gw = <f64>load<f32>(gr + o) * <f64>load<f32>(wr + o);
        store<f32>(gr + o, <f32>(gw / sc + k * <f64>load<f32>(xr + o)));
      }
    }
  }
}

// out[i] = cap tanh(x[i] / cap) for i in [start, end) (x and out may alias).
export function softcap(x: usize, out: usize, cap: f64, start: i32, end: i32): void {
  for (let i = start; i < end; i++) {
    const o = <usize>i << 2;
    store<f32>(out + o, <f32>(cap * Math.tanh(<f64>load<f32>(x + o) / cap)));
  }
}

// dx[i] = dy[i] (1 - tanh(x[i] / cap)^2) for i in [start, end) (dx may alias
// x or dy).
export function softcapBackward(
  x: usize, dy: usize, dx: usize, cap: f64, start: i32, end: i32,
): void {
  for (let i = start; i < end; i++) {
    const o = <usize>i << 2;
    const t = Math.tanh(<f64>load<f32>(x + o) / cap);
    store<f32>(dx + o, <f32>(<f64>load<f32>(dy + o) * (1.0 - t * t)));
  }
}
