// Reductions over the head axis of per-head activations.

// out[r, :] = (x[r, 0, :] + x[r, 1, :] + ... + x[r, heads - 1, :]) + bias
// for rows [rowStart, rowEnd): x is [rows, heads, d], out [rows, d], bias 0 or
// d floats. Heads are added in order, then the bias (TransformerLens's
// `result.sum(head) + b_O`). out must not overlap x.
export function sumHeads(
  x: usize, out: usize, heads: i32, d: i32, bias: usize, rowStart: i32, rowEnd: i32,
): void {
  const d4 = d & ~3;
  const rowB = <usize>heads * <usize>d << 2;
  const headB = <usize>d << 2;
  for (let r = rowStart; r < rowEnd; r++) {
    const xr = x + <usize>r * rowB;
    const or = out + (<usize>r * <usize>d << 2);
    let j = 0;
    for (; j < d4; j += 4) {
      const o = <usize>j << 2;
      let s = v128.load(xr + o);
      for (let h = 1; h < heads; h++) s = f32x4.add(s, v128.load(xr + <usize>h * headB + o));
      if (bias) s = f32x4.add(s, v128.load(bias + o));
      v128.store(or + o, s);
    }
    for (; j < d; j++) {
      const o = <usize>j << 2;
      let s = load<f32>(xr + o);
      for (let h = 1; h < heads; h++) s += load<f32>(xr + <usize>h * headB + o);
      if (bias) s += load<f32>(bias + o);
      store<f32>(or + o, s);
    }
  }
}
