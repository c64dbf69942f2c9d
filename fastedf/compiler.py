"""Lowering a graph to one Numba program (work in progress)."""


def lower(graph):
    return None, "the compiled engine is not written yet"
