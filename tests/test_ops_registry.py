"""fastedf.ops collects each op module's declared nodes and aliases: adding an op is adding a module."""
import pkgutil
import types

import pytest

import fastedf
from fastedf import ops


def test_every_op_module_is_collected_in_its_declared_order():
    names = sorted(info.name for info in pkgutil.iter_modules(ops.__path__))
    assert sorted(m.__name__.rsplit(".", 1)[1] for m in ops.MODULES) == names
    orders = [m.ORDER for m in ops.MODULES]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)


def test_declared_nodes_and_aliases_are_exported_by_fastedf():
    for module in ops.MODULES:
        for cls in module.NODES:
            assert getattr(fastedf, cls.__name__) is cls and getattr(ops, cls.__name__) is cls
            assert cls.__name__ in fastedf.__all__
        for alias, cls in module.ALIASES.items():
            assert getattr(fastedf, alias) is cls and alias in fastedf.__all__
    assert fastedf.Conv2D is fastedf.Conv and fastedf.CrossEntropy is fastedf.CE


def test_a_name_declared_by_two_modules_is_refused():
    one, other = types.ModuleType("fastedf.ops.one"), types.ModuleType("fastedf.ops.other")
    with pytest.raises(ImportError, match="fastedf.ops.other declares the alias 'Relu'"):
        ops._collect([(one, "Relu", fastedf.ReLU), (other, "Relu", fastedf.Tanh)], "alias")
