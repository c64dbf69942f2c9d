"""Kernels for the losses as students write them: the clipping constant and its form are arguments.

fastedf's own loss kernels (fastedf.ops.losses) clip at fastedf's 1e-12;
a student's BCE may clip at 1e-7, add 1e-9 inside the log, or not clip at all,
and a candidate must give the user's bits' worth of those.  Each kernel
computes the terms exactly as the NumPy expression the candidate stands for,
0 * log(0) = NaN included.  clip: 0 none, 1 p clipped to [eps, 1 - eps] (BCE)
or below at eps (CE), 2 eps added inside the log (CE).
"""
import math

from ..config import helper, kernel
from ..kernels import common_size, common_size3


@helper
def clipped(p, eps, clip, upper):
    if clip == 1:
        p = max(p, eps)
        return min(p, 1.0 - eps) if upper else p
    if clip == 2:
        return p + eps
    return p


@kernel
def bce_total(y, p, eps, clip):
    """sum of -(y log pc + (1 - y) log(1 - pc)) over all elements, pc the clipped p."""
    total = 0.0
    for i in range(common_size(y, p)):
        pc, yi = clipped(p.flat[i], eps, clip, True), y.flat[i]
        total += -(yi * math.log(pc) + (1.0 - yi) * math.log(1.0 - pc))
    return total


@kernel
def bce_gradient(y, p, eps, clip, scale, out):
    """out = (pc - y) / (pc (1 - pc)) * scale: dBCE/dp."""
    for i in range(common_size3(y, p, out)):
        pc = clipped(p.flat[i], eps, clip, True)
        out.flat[i] = (pc - y.flat[i]) / (pc * (1.0 - pc)) * scale


@kernel
def bce_label_gradient(p, eps, clip, scale, out):
    """out = (log(1 - pc) - log(pc)) * scale: dBCE/dy."""
    for i in range(common_size(p, out)):
        pc = clipped(p.flat[i], eps, clip, True)
        out.flat[i] = (math.log(1.0 - pc) - math.log(pc)) * scale


@kernel
def ce_total(y, p, eps, clip):
    """sum of -y log pc over all elements."""
    total = 0.0
    for i in range(common_size(y, p)):
        total += -(y.flat[i] * math.log(clipped(p.flat[i], eps, clip, False)))
    return total


@kernel
def ce_gradient(y, p, eps, clip, logits, scale, out):
    """out = -y / pc * scale (dCE/dp), or (p - y) * scale (the logits' gradient, when logits)."""
    for i in range(common_size3(y, p, out)):
        if logits:
            out.flat[i] = (p.flat[i] - y.flat[i]) * scale
        else:
            out.flat[i] = -y.flat[i] / clipped(p.flat[i], eps, clip, False) * scale


@kernel
def ce_label_gradient(p, eps, clip, scale, out):
    """out = -log(pc) * scale: dCE/dy."""
    for i in range(common_size(p, out)):
        out.flat[i] = -math.log(clipped(p.flat[i], eps, clip, False)) * scale
