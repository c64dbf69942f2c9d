"""exp and tanh for kernels, written so that LLVM vectorises the loops that call them.

Numba lowers math.exp to a call into libm per element (llvmlite from PyPI has
no SVML), so a sigmoid over a hidden layer ran at 5.7 ns per element where
NumPy's four SIMD passes took 1.9 (benchmarks/bench_activations.py, 32768
elements).  This exp is branch-free arithmetic that LLVM turns
into AVX code inside the caller's loop: x = k ln2 + r with |r| <= ln2/2,
exp(r) by its Taylor polynomial to degree 13 (truncation < 2e-17 relative),
and 2^k built from the exponent bits.  Measured against np.exp on 2 million
points over the whole range: at most 1 ulp apart, subnormals, 0, inf and NaN
included (tests/test_vexp.py).  tanh is Cephes' rational approximation
below |x| = 0.625 and 1 - 2 / (exp(2|x|) + 1) above, both computed and one
selected: within 2 ulp of np.tanh, 2.1 ns per element where libm's took 14.8
(bench_activations.py, 32768 elements; the sigmoid on this exp: 1.8).
LLVM vectorises a loop calling them only under NumPy's error model, which
fastedf.config.FLAGS sets for every kernel.
"""
import math

import numpy as np
from numba import types
from numba.extending import intrinsic

from .config import fma_helper, helper

LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * LN2_HI is exact for |k| < 2^11
LN2_LO = 1.90821492927058770002e-10
# Below this exp underflows to 0 in float64, above the next it overflows to inf.
LOW, HIGH = -746.0, 710.0
C = [1.0 / math.factorial(n) for n in range(14)]
(C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13) = C


def _bit_cast(source, target):
    """A Numba intrinsic that reinterprets a `source` value's 64 bits as a `target` (a bit cast, no conversion)."""
    @intrinsic
    def cast(typingctx, value):
        if value != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen
    return cast


_float_from_bits = _bit_cast(types.int64, types.float64)  # the float64 whose IEEE-754 bits are the int64
_bits_of_float = _bit_cast(types.float64, types.int64)  # the int64 holding the float64's IEEE-754 bits
# unsigned, so that a right shift is a logical one: AVX2 has no packed 64-bit arithmetic shift
_float_from_ubits = _bit_cast(types.uint64, types.float64)
_ubits_of_float = _bit_cast(types.float64, types.uint64)


# Adding 1.5 * 2^52 puts an integer-valued float's value in the low bits of the sum's mantissa: a float to
# int64 conversion made of a float add and an integer subtract, which AVX2 has for vectors (it has no packed
# float64 -> int64 conversion; that is AVX-512, and without it LLVM did not vectorise exp on an AMD EPYC).
SHIFTER = 6755399441055744.0


@helper
def _pow2(h):
    """2.0 ** h for an integer-valued float -1022 <= h <= 1023, from its exponent bits."""
    return _float_from_bits((_bits_of_float(h + (1023.0 + SHIFTER)) - _bits_of_float(SHIFTER)) << 52)


@fma_helper
def exp(x):
    """e ** x to within 1 ulp of np.exp, NaN for NaN; vectorisable (no branch, no call)."""
    x = min(max(x, LOW), HIGH)  # NaN stays NaN
    k = np.floor(x * LOG2E + 0.5)  # np.floor stays a float: math.floor gives an int64, a conversion AVX2 lacks
    r = (x - k * LN2_HI) - k * LN2_LO
    p = C13
    p = p * r + C12
    p = p * r + C11
    p = p * r + C10
    p = p * r + C9
    p = p * r + C8
    p = p * r + C7
    p = p * r + C6
    p = p * r + C5
    p = p * r + C4
    p = p * r + C3
    p = p * r + C2
    p = p * r + C1
    p = p * r + C0
    half = np.floor(k * 0.5)  # 2^k as 2^half * 2^(k - half): both factors stay normal from -1075 to 1024
    return p * _pow2(half) * _pow2(k - half)  # k NaN: some factor, but p is NaN and so is the product


# tanh(x) = x + x z P(z) / Q(z), z = x^2, for |x| < 0.625 (Cephes, tanh.c)
P0, P1, P2 = -9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3
Q1, Q2, Q3 = 1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3


@helper
def tanh(x):
    """tanh(x) to within 2 ulp of np.tanh, NaN for NaN; vectorisable (both forms computed, one selected)."""
    a = abs(x)
    z = x * x
    small = x * (1.0 + z * (((P0 * z + P1) * z + P2) / (((z + Q1) * z + Q2) * z + Q3)))  # -0.0 stays -0.0
    big = math.copysign(1.0 - 2.0 / (exp(2.0 * a) + 1.0), x)  # exp overflows to inf from |x| = 355: 1 exactly
    return small if a < 0.625 else big  # one select: a nested one (sign) kept LLVM from vectorising on AVX2


# log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f), for sqrt(2)/2 <= 1 + f < sqrt(2) (fdlibm, e_log.c)
LG1, LG2, LG3 = 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01
LG4, LG5, LG6, LG7 = 2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01, \
    1.479819860511658591e-01
_U20, _U32, _U52 = np.uint64(20), np.uint64(32), np.uint64(52)
_HIGH_MANTISSA, _ROUND, _BIT20 = np.uint64(0x000FFFFF), np.uint64(0x95F64), np.uint64(0x100000)
_ONE_HIGH, _MANTISSA = np.uint64(0x3FF00000), np.uint64(0x000FFFFFFFFFFFFF)
_SHIFTER_BITS = np.uint64(0x4338000000000000)  # the bits of SHIFTER


@helper
def log(x):
    """The natural log of a positive normal float64 (BCE's clipped predictions), within 1 ulp of np.log;
    vectorisable (no branch, no call).  Zero, negatives, subnormals, inf and NaN are outside its domain:
    callers clip first."""
    bits = _ubits_of_float(x)
    high = (bits >> _U32) & _HIGH_MANTISSA
    half = (high + _ROUND) & _BIT20  # set where the mantissa is >= sqrt(2): then use x / 2 and k + 1
    m = _float_from_ubits((bits & _MANTISSA) | ((half ^ _ONE_HIGH) << _U32))  # in [sqrt(2)/2, sqrt(2))
    biased = (bits >> _U52) + (half >> _U20)  # k + 1023, k the exponent of x = 2^k m
    k = (_float_from_ubits(biased | _SHIFTER_BITS) - SHIFTER) - 1023.0  # an int to float without cvtqq2pd
    f = m - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    r = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7))) + w * (LG2 + w * (LG4 + w * LG6))
    return k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)
