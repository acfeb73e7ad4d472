/**
 * Float64 references of the MLP activations (gelu_new, exact GELU, SiLU, ReLU) and of their
 * derivatives, for the kernel tests. They use forms other than the kernels' where it matters:
 * erfc by a series and a continued fraction (the kernel fits a polynomial), 1 - sigmoid as the
 * sigmoid of the negated argument (the kernel writes it as e * sigmoid).
 * @module
 */

/** An activation's TransformerLens name. */
export type ActivationName = "gelu" | "silu" | "relu" | "gelu_new";

/**
 * erfc(z) for z >= 0 in float64, by a method unrelated to the kernel's: the Taylor series of erf
 * below 2 (terms at most e^4 = 55 times the result: ~1e-14 absolute, and erfc(2) = 4.7e-3, so
 * ~1e-12 relative), the continued fraction of erfc at and above 2 (Lentz, to convergence).
 */
export function erfc(z: number): number {
  if (z < 2) {
    let term = z, sum = z;
    for (let n = 1; n < 200 && Math.abs(term) > 1e-18 * Math.abs(sum); n++) {
      term *= -z * z / n;
      sum += term / (2 * n + 1);
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(z) = exp(-z^2)/sqrt(pi) * 1 / (z + (1/2) / (z + 1 / (z + (3/2) / (z + ...))))
  const tiny = 1e-300;
  let f = z, c = z, d = 0;
  for (let n = 1; n < 5000; n++) {
    const a = n / 2;
    d = z + a * d;
    d = Math.abs(d) < tiny ? tiny : d;
    c = z + a / c;
    c = Math.abs(c) < tiny ? tiny : c;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
}

/** Phi(x), the standard normal CDF, from erfc without cancellation in either tail. */
function normalCdf(x: number): number {
  const half = erfc(Math.abs(x) / Math.SQRT2) / 2;
  return x < 0 ? half : 1 - half;
}

/** x Phi(x) in float64, relative accuracy ~1e-12. */
export function geluRef(x: number): number {
  return x * normalCdf(x);
}

const C = Math.sqrt(2 / Math.PI);

/** The activations in float64 (finite x; NaN stays NaN). */
export const ACTIVATION_REFS: Record<ActivationName, (x: number) => number> = {
  gelu: geluRef,
  silu: (x) => x / (1 + Math.exp(-x)),
  relu: (x) => Number.isNaN(x) ? NaN : Math.max(x, 0),
  gelu_new: (x) => {
    const u = C * (x + 0.044715 * x * x * x);
    return x / (1 + Math.exp(-2 * u));
  },
};

/**
 * Their derivatives in float64, for finite x (ReLU's is 0 at 0, as PyTorch's). The smooth ones
 * are sums of two terms of size at most ~1.2 that cancel near each derivative's zero.
 */
export const ACTIVATION_GRAD_REFS: Record<ActivationName, (x: number) => number> = {
  // Phi(x) + x phi(x)
  gelu: (x) => normalCdf(x) + x * Math.exp(-x * x / 2) / Math.sqrt(2 * Math.PI),
  // s (1 + x (1 - s)), 1 - s = sigmoid(-x)
  silu: (x) => (1 + x / (1 + Math.exp(x))) / (1 + Math.exp(-x)),
  relu: (x) => x > 0 ? 1 : 0,
  // gelu_new(x) = x sigmoid(2u): sigmoid(2u) + x sigmoid(2u) sigmoid(-2u) 2u'
  gelu_new: (x) => {
    const u = C * (x + 0.044715 * x * x * x);
    const s = 1 / (1 + Math.exp(-2 * u)), sc = 1 / (1 + Math.exp(2 * u));
    return s + x * s * sc * 2 * C * (1 + 3 * 0.044715 * x * x);
  },
};
