#!/usr/bin/env python3
"""Coefficients of the vectorised erf in src/core/kernels/ops_avx2.cpp (not a fixture generator).

erf(x) on [1, 4] is a degree-12 Chebyshev interpolant in t = (2x - 5) / 3, converted to monomials in t
and evaluated in float32 by Horner; this prints the coefficients (highest degree first) and the
max absolute error of that float32 evaluation against math.erf on a dense grid (~1e-7, i.e. the
rounding of the float32 evaluation). On [0, 1) the kernel uses the Taylor series of erf to x^21.
"""
import math

import numpy as np
from numpy.polynomial import chebyshev as C

a, b, deg = 1.0, 4.0, 12
xs = np.cos(np.pi * (np.arange(2000) + 0.5) / 2000) * (b - a) / 2 + (a + b) / 2
c = C.chebfit((2 * xs - a - b) / (b - a), [math.erf(v) for v in xs], deg)
p = C.cheb2poly(c)
xt = np.linspace(a, b, 200001).astype(np.float32)
tt = ((np.float32(2) * xt - np.float32(a + b)) * np.float32(1 / (b - a))).astype(np.float32)
acc = np.float32(p[-1])
for co in p[-2::-1]:
    acc = (acc * tt + np.float32(co)).astype(np.float32)
err = np.abs(acc - np.array([math.erf(float(v)) for v in xt])).max()
print("coefficients (t^12 .. t^0):")
for co in p[::-1]:
    print(f"    {np.float32(co)!r:>20}f,")
print(f"max abs error of the float32 evaluation on [1, 4]: {err:.3g}")
