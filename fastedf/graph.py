"""Graph helpers with the names course scripts use: order, run and update a graph."""
import contextlib
import functools

import numpy as np

from . import kernels as K
from .node import F64, Input, Node, as_float64


def _ancestors_first(roots):
    """Every node the roots depend on, and the roots, each after all of its inputs."""
    order, seen = [], set()
    for root in roots:
        stack = [(root, False)]
        while stack:  # iterative depth-first search: deep graphs must not hit the recursion limit
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
            elif node not in seen:
                seen.add(node)
                stack.append((node, True))
                stack.extend((inp, False) for inp in reversed(node.inputs) if inp not in seen)
    return order


def topological_sort(nodes):
    """All nodes in an order where every node comes after its inputs.

    `nodes` is one node (the graph is that node and everything it depends on),
    or a list of nodes or a feed dict {Input: value} as in the course (the
    values are assigned; the graph is every node reachable from them through
    `outputs`, plus every input those nodes need).
    """
    if isinstance(nodes, Node):
        return _ancestors_first([nodes])
    if isinstance(nodes, dict):
        for node, value in nodes.items():
            node.value = value
    seeds = list(nodes)
    for node in seeds:
        if not isinstance(node, Node):
            raise TypeError(f"topological_sort: expected nodes, got a {type(node).__name__}")
    reached, stack = set(seeds), list(seeds)
    while stack:
        for out in stack.pop().outputs:
            if out not in reached:
                reached.add(out)
                stack.append(out)
    sinks = [n for n in reached if not any(o in reached for o in n.outputs)]
    sinks.sort(key=lambda n: n._id)  # creation order: the same graph always sorts the same way
    return _ancestors_first(sinks)


def forward_pass(graph, sorted_nodes=None):
    """Run forward() on every node in order; returns the last node's value.

    Also accepts the course form forward_pass(output_node, sorted_nodes), which
    returns output_node's value.
    """
    if isinstance(graph, Node):
        output, nodes = graph, sorted_nodes
    else:
        nodes = graph
        output = nodes[-1]
    for node in nodes:
        node.forward()
    return output.value


def backward_pass(graph):
    """Run backward() on every node in reverse order; only consumers in `graph` contribute gradients."""
    with graph_run(graph):
        for node in reversed(graph):
            node.backward()


@contextlib.contextmanager
def graph_run(graph):
    """Within the block, a node's upstream gradient sums only its consumers inside `graph`.

    A consumer outside (a second graph sharing a Parameter, a node the loss
    also feeds) keeps whatever gradients it last computed; they never leak in.
    """
    nodes = tuple(graph)
    for node, consumers in _consumers_within(nodes):
        node._consumers = consumers
    try:
        yield
    finally:
        for node in nodes:
            node._consumers = None


@contextlib.contextmanager
def node_settings(graph, **settings):
    """Within the block every node of `graph` has these attributes (Node.keeps_deferred, Node.rows_are_samples);
    after it, the class defaults again."""
    for node in graph:
        for name, value in settings.items():
            setattr(node, name, value)
    try:
        yield
    finally:
        for node in graph:
            for name in settings:
                delattr(node, name)


def rows_as_samples(graph):
    """Within the block the nodes know their data's rows are samples (Node.rows_are_samples): fit's feeds, a
    model's x.  Shapes that could also be samples as columns are then not ambiguous."""
    return node_settings(graph, rows_are_samples=True)


@functools.lru_cache(maxsize=32)
def _consumers_within(nodes):
    """(node, its consumers among `nodes`) for every node: computed once per graph, not once per step.

    Consumers inside the graph depend only on its members: a node added to
    it makes another tuple; a node built later outside it changes nothing.
    """
    members = set(nodes)
    return tuple((node, [n for n in node.outputs if n in members]) for node in nodes)


def sgd_update(trainables, lr=1e-2, learning_rate=None):
    """t.value -= lr * t.gradients[t] for every trainable node, in place.

    `trainables` may also be a whole graph: its leaves other than Inputs are updated.
    """
    if learning_rate is not None:
        lr = learning_rate
    lr = float(lr)
    for t in trainables:
        if isinstance(t, Input):
            continue  # data, never trained
        try:
            grad = t.gradients[t]
        except KeyError:
            if t.inputs:
                continue  # an operation node of a whole graph passed in
            raise ValueError(f"sgd_update: {t} has no gradient; run backward_pass first") from None
        value, grad = t.value, as_float64(grad)
        if grad.shape != np.shape(value):
            raise ValueError(f"sgd_update: {t} has shape {np.shape(value)} but its gradient has {grad.shape}")
        if type(value) is np.ndarray and value.dtype is F64 and value.flags.c_contiguous and value.flags.writeable:
            K.sgd_update(value, grad, lr)
        else:
            t.value = value - lr * grad
