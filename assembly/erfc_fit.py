"""Fits the polynomial of assembly/activations.ts's exact GELU (run: python3 erfc_fit.py).

P(u) interpolates erfc(z) exp(z^2) / t at the 15 Chebyshev nodes of u in [-1, 1], where
t = 2 / (2 + z) and u = 2t - 1, computed with mpmath at 50 digits; it prints P's coefficients
(u^0 first) and the largest relative error of x Phi(x) evaluated as the kernel does, in float64.
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 50
DEGREE = 14


def scaled_erfc(u):
    u = mp.mpf(u)
    t = (1 + u) / 2
    z = 2 * (1 - t) / t
    return mp.erfc(z) * mp.exp(z * z) / t


n = DEGREE + 1
nodes = [mp.cos(mp.pi * (k + mp.mpf(1) / 2) / n) for k in range(n)]
a = mp.matrix([[x**j for j in range(n)] for x in nodes])
coef = mp.lu_solve(a, mp.matrix([scaled_erfc(x) for x in nodes]))
c = [float(coef[j]) for j in range(n)]
for v in c:
    print(repr(v))

worst = 0.0
for x in np.float32(np.concatenate([np.linspace(-14, 14, 20001), np.linspace(-1e-3, 1e-3, 101)])):
    x = float(x)
    z = abs(x) * 0.7071067811865476
    u = (2 - z) / (2 + z)
    p = 0.0
    for v in reversed(c):
        p = p * u + v
    half = (1 + u) * 0.25 * p * np.exp(-x * x * 0.5)
    gelu = x * (half if x < 0 else 1 - half)
    ref = mp.mpf(x) * mp.ncdf(mp.mpf(x))
    if ref != 0:
        worst = max(worst, abs(float((gelu - ref) / ref)))
print("max relative error of gelu:", worst)
