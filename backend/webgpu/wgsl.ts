/**
 * WGSL shared by the kernel families: the parameter and storage declarations, the workgroup index
 * of a two-dimensional dispatch, exp, the normal CDF and the MLP activations with their
 * derivatives. WGSL has no f64, so where the WebAssembly kernels compute in f64 and round once,
 * these compute in f32 (a few ulp instead of half of one); the conformance suite's tolerances
 * say how much that is.
 * @module
 */

/** +infinity in WGSL, from a module-scope variable so that it is no constant expression. */
export const INF = "bitcast<f32>(INF_BITS)";
/** -infinity in WGSL (see {@linkcode INF}). */
export const NEG_INF = "bitcast<f32>(INF_BITS | 0x80000000u)";

/** Elementwise kernels' workgroup size. */
export const WG = 256;

/**
 * The module header: `struct P` from `fields` ("name: u32", "name: f32") as binding 0, and
 * `names` as read-write f32 storage arrays at bindings 1.. (read_write everywhere, so that two
 * views of one buffer, such as q, k and v of a fused Q|K|V, may be bound together).
 */
export function header(fields: string[], names: string[], types: Record<string, string> = {}) {
  const struct = `struct P { ${fields.map((f) => f + ",").join(" ")} }\n` +
    `@group(0) @binding(0) var<uniform> p: P;\n` +
    // Infinity's bits, read at run time: a constant expression that evaluates to an infinity
    // (`bitcast<f32>(0x7f800000u)`) is a shader-creation error in WGSL, which Chromium's Tint
    // enforces (wgpu accepts it). See INF and NEG_INF.
    `var<private> INF_BITS: u32 = 0x7f800000u;\n`;
  return struct +
    names.map((n, i) =>
      `@group(0) @binding(${i + 1}) var<storage, read_write> ${n}: array<${types[n] ?? "f32"}>;`
    ).join("\n") + "\n";
}

/** The entry point of a kernel with one workgroup of `size` per item (`item` = the index). */
export function entry(size: number): string {
  return `@compute @workgroup_size(${size})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let item = wg.x + wg.y * nwg.x;`;
}

/**
 * exp in f32 by the operation sequence of the WebAssembly kernels' `expv` (assembly/simd.ts):
 * clamp to [-104, 89] (NaN passes), x = n ln2 + r by a Cody-Waite split, exp(r) by a degree-7
 * Taylor polynomial, 2^n applied in two halves. Same arithmetic, so softmax and log-sum-exp
 * match the CPU's closely (WGSL's own `exp` has an implementation-defined error).
 */
export const EXP = /* wgsl */ `
fn expf(x: f32) -> f32 {
  var t = select(x, 89.0, 89.0 < x);
  t = select(t, -104.0, t < -104.0);
  let nf = round(t * 1.44269504088896341);
  var r = t - nf * 0.693359375;
  r = r - nf * -2.12194440e-4;
  var q = (1.0 / 5040.0) * r + (1.0 / 720.0);
  q = q * r + (1.0 / 120.0);
  q = q * r + (1.0 / 24.0);
  q = q * r + (1.0 / 6.0);
  q = q * r + 0.5;
  q = q * r + 1.0;
  q = q * r + 1.0;
  let n = i32(nf);
  let n1 = n >> 1u;
  let n2 = n - n1;
  return q * bitcast<f32>((n1 + 127) << 23u) * bitcast<f32>((n2 + 127) << 23u);
}
`;

/**
 * The activations (codes as the WebAssembly ABI's: 0 gelu_new, 1 gelu, 2 silu, 3 relu) and
 * `act_grad` (dy act'(x), PyTorch's values at the special points), the formulas of
 * assembly/activations.ts and activations_backward.ts in f32. Exact GELU's Phi comes from the same
 * erfc fit: erfc(z) = t P(u) exp(-z^2), z = |x| / sqrt 2, u = (2 - z) / (2 + z), so there is no
 * 1 - p cancellation in either tail.
 */
export const ACTIVATIONS = EXP + /* wgsl */ `
fn gaussian(x: f32) -> f32 { return expf(x * x * -0.5); }
fn normal_cdf(x: f32, g: f32) -> f32 {
  let z = min(abs(x) * 0.7071067811865476, 40.0);
  let u = (2.0 - z) / (2.0 + z);
  var q = 1.1562763326840017e-06 * u + 2.5851262348797273e-06;
  q = q * u + -1.2554078565314834e-05;
  q = q * u + -9.728992850089116e-06;
  q = q * u + 7.324707326631622e-05;
  q = q * u + -2.2449633699957507e-05;
  q = q * u + -0.00033188814950468507;
  q = q * u + 0.00042071907109662014;
  q = q * u + 0.0015453724331298485;
  q = q * u + -0.003240017102150852;
  q = q * u + -0.010755336719970848;
  q = q * u + 0.01822115452474287;
  q = q * u + 0.13973604642869117;
  q = q * u + 0.3435803411742941;
  q = q * u + 0.5107913526210115;
  let half = (1.0 + u) * 0.25 * q * g;
  return select(1.0 - half, half, x < 0.0);
}
fn gelu_new(x: f32) -> f32 {
  let u = x * (0.7978845608028654 + 0.035677408136300125 * (x * x));
  return x / (1.0 + expf(u * -2.0));
}
fn act(code: u32, x: f32) -> f32 {
  switch code {
    case 0u: { return gelu_new(x); }
    case 1u: { return x * normal_cdf(x, gaussian(x)); }
    case 2u: { return x / (1.0 + expf(-x)); }
    default: { return select(0.0, x, x > 0.0 || x != x); }
  }
}
fn act_grad(code: u32, x: f32, g: f32) -> f32 {
  var d: f32;
  switch code {
    case 0u: {
      let u = x * (0.7978845608028654 + 0.035677408136300125 * (x * x));
      let e = expf(u * -2.0);
      let sg = 1.0 / (1.0 + e);
      let du = 1.5957691216057308 + 0.21406444881780075 * (x * x);
      // d = sg + x du e sg^2 = sg (1 + x du es), es = e sg = 1 - sg, taken from the side without
      // cancellation; never inf * 0 where e overflows f32 (software adapters compile with
      // fast-math, which may not keep a select around an infinity)
      let es = select(1.0 - sg, e * sg, e < 1.0);
      d = sg * (1.0 + x * du * es);
    }
    case 1u: {
      let gs = gaussian(x);
      d = normal_cdf(x, gs) + x * (gs * 0.3989422804014327);
    }
    case 2u: {
      let e = expf(-x);
      let s = 1.0 / (1.0 + e);
      d = s * (1.0 + x * select(1.0 - s, e * s, e < 1.0));
    }
    default: { return select(g, 0.0, x <= 0.0); }
  }
  // x - x is NaN for an infinite x (PyTorch's NaN there) and 0 otherwise
  return (d + (x - x)) * g;
}
`;

/**
 * tanh and sech^2 in f32 (Gemma's softcap; WGSL's own `tanh` has an implementation-defined
 * error): below |y| = 1/8 the odd Taylor series to y^9 (truncation under 1e-12 relative), above
 * it (1 - e) / (1 + e) with e = exp(-2|y|) (e <= 0.78, so the subtraction loses at most 2 bits).
 * sech^2 = 4e / (1 + e)^2 has no cancellation anywhere, unlike 1 - tanh^2 (which the CPU computes
 * in f64); both are within a few ulp.
 */
export const TANH = EXP + /* wgsl */ `
fn tanh_f(y: f32) -> f32 {
  let a = abs(y);
  var t: f32;
  if (a < 0.125) {
    let y2 = a * a;
    t = a * (1.0 + y2 * (-0.3333333333333333 + y2 * (0.13333333333333333 +
      y2 * (-0.05396825396825397 + y2 * 0.021869488536155203))));
  } else {
    let e = expf(-2.0 * a);
    t = (1.0 - e) / (1.0 + e);
  }
  return select(t, -t, y < 0.0);
}
fn sech2_f(y: f32) -> f32 {
  let e = expf(-2.0 * abs(y));
  return 4.0 * e / ((1.0 + e) * (1.0 + e));
}
`;

/** The activation codes the shaders take. */
export const ACTIVATION_CODE = { gelu_new: 0, gelu: 1, silu: 2, relu: 3 } as const;

/**
 * A workgroup tree reduction of `WG_R` values in `red` (sum or max), leaving the result in
 * `red[0]` for every invocation; every invocation must call it (it has barriers).
 */
export const REDUCE = /* wgsl */ `
const WG_R: u32 = 256u;
var<workgroup> red: array<f32, 256>;
fn reduce_sum(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG_R / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
fn reduce_max(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG_R / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
`;
