"""The operations, one module per family: each node class beside its Numba kernels and its compile rule.

Every module here declares NODES (its public node classes), ALIASES (the
names course scripts use for them) and ORDER (its place in generated
programs: the order of their imports and kernel table; a new module takes
the next number, so existing graphs keep their program sources and the
cache entries named by them); this package collects them, so adding an op
is adding a module.
A node that compiles has a `lower(low)` method (fastedf.compiler); MODULES
are the modules whose kernels the generated programs import, by ORDER.
"""
import importlib
import os

# os.listdir, not pkgutil.iter_modules: importing pkgutil is a tenth of what importing the ops costs
MODULES = tuple(sorted((importlib.import_module(f"{__name__}.{name[:-3]}") for name in os.listdir(__path__[0])
                        if name.endswith(".py") and name != "__init__.py"),
                       key=lambda module: (module.ORDER, module.__name__)))


def _collect(pairs, what):
    """{name: class}, refusing a name two modules declare."""
    found = {}
    for module, name, cls in pairs:
        if name in found and found[name] is not cls:
            raise ImportError(f"{module.__name__} declares the {what} {name!r}, already declared for {found[name]!r}")
        found[name] = cls
    return found


NODES = _collect(((m, cls.__name__, cls) for m in MODULES for cls in m.NODES), "node")
ALIASES = _collect(((m, alias, cls) for m in MODULES for alias, cls in m.ALIASES.items()), "alias")
globals().update(NODES)

__all__ = [*NODES, "MODULES", "NODES", "ALIASES"]
