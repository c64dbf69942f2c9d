"""A training program calls its kernels by address, so compiling it does not compile them again.

Numba links the code of every function a jitted function calls into the
caller's module and optimises the whole again: with every kernel already
cached, an eight-layer MLP's program held ~770 kB of LLVM IR, mostly its
kernels', and spent 2.7 s of its 3.9 s compile in LLVM (Numba's own timers,
with its kernels called directly).  Here a program's kernel calls go through a
table of function pointers instead, one slot per call site: the program's
module holds only its own loop, and each kernel is compiled (or loaded from
Numba's cache) once, on its own.  A new graph whose kernels are cached so
compiles in about half the time (benchmarks/bench_compile.py, "new graph").

The price: a warm process loads each kernel from Numba's cache on its own,
~5 ms apiece here, where it loaded one program holding them all.

How the table is kept safe: while a program is compiled, each call site's
slot records the kernel and signature Numba resolved (`_typed`); the program's
compiled code holds a hash of each, which it writes out when called with
`max_steps == 0` (`kernel_hashes`).  fastedf.compiler stores the slots'
kernels and signatures beside the program's source, and before any step
fills the table only with the addresses of functions whose hashes match the
compiled code's, slot by slot; anything else is recompiled.  A slot's call
uses the kernel's own calling convention, so a Python exception raised in a
kernel propagates as from a direct call.

A short program (the study's) calls its kernels with `icall` instead: the
kernel's code is linked into the program and LLVM inlines it, so its steps
run without calls, and compiling the program types only its own loop.
"""
import hashlib
import re

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.registry import CPUDispatcher
from numba.extending import intrinsic

_typed = {}  # slot -> (kernel dispatcher, signature) of the program compiled last (compiles are serialised)


def kernel_hash(dispatcher, signature):
    """A 63-bit hash naming one compiled kernel: its module, name and full signature."""
    text = f"{dispatcher.py_func.__module__}.{dispatcher.py_func.__qualname__}{signature}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


@intrinsic(prefer_literal=True)
def kcall(typingctx, kernel, table, slot, *args):
    """kernel(*args), through the function pointer in table[slot] (int64 addresses, one per call site).

    The arguments travel as star arguments, not a tuple: building a tuple of
    arrays takes a reference to each (an NRT call apiece, per step).
    """
    if not (isinstance(kernel, types.Dispatcher) and isinstance(slot, types.IntegerLiteral)):
        return None
    # unliteral: a constant argument would compile a kernel of its own (prefer_literal is for the slot)
    signature = typingctx.resolve_function_type(kernel, tuple(types.unliteral(a) for a in args), {})
    if signature is None:
        return None

    def codegen(context, builder, sig, llargs):  # Numba caches typing, not lowering: record here
        _typed[slot.literal_value] = (kernel.dispatcher, signature)
        _hash_global(builder.module, slot.literal_value).initializer = ir.Constant(
            ir.IntType(64), kernel_hash(kernel.dispatcher, signature))
        addresses = context.make_array(sig.args[1])(context, builder, llargs[1])
        at = builder.gep(addresses.data, [context.get_constant(types.intp, slot.literal_value)])
        function_type = context.call_conv.get_function_type(signature.return_type, signature.args)
        function = builder.inttoptr(builder.load(at), function_type.as_pointer())
        return _call(context, builder, function, signature, args, llargs[3])
    return signature.return_type(kernel, table, slot, types.StarArgTuple.from_types(args)), codegen


@intrinsic
def icall(typingctx, kernel, *args):
    """kernel(*args), a direct call that LLVM inlines (a call-site alwaysinline).

    The kernel is compiled (or loaded from Numba's cache) on its own and its
    code linked into the caller, where LLVM inlines it; Numba's own
    inline="always" would type the kernel's body again in every caller.
    """
    if not isinstance(kernel, types.Dispatcher):
        return None
    signature = typingctx.resolve_function_type(kernel, tuple(types.unliteral(a) for a in args), {})
    if signature is None:
        return None

    def codegen(context, builder, sig, llargs):
        compiled = kernel.dispatcher.overloads[tuple(signature.args)]
        context.add_linking_libs([compiled.library])
        function = context.declare_function(builder.module, compiled.fndesc)
        return _call(context, builder, function, signature, args, llargs[1], attrs=("alwaysinline",))
    return signature.return_type(kernel, types.StarArgTuple.from_types(args)), codegen


def _call(context, builder, function, signature, given_types, given, attrs=None):
    """Call a Numba-compiled `function` of `signature` with the star-argument tuple `given` (of `given_types`),
    propagating its exception as a direct call would."""
    values = [context.cast(builder, builder.extract_value(given, i), have, want)
              for i, (have, want) in enumerate(zip(given_types, signature.args))]
    status, result = context.call_conv.call_function(builder, function, signature.return_type, signature.args,
                                                     values, attrs=attrs)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    return result


@intrinsic(prefer_literal=True)
def kernel_hashes(typingctx, out, count):
    """Write the hash (kernel_hash) of each of the `count` call sites' kernels into out[0:count]; 0 for a call
    site the compiler removed."""
    if not (isinstance(out, types.Array) and isinstance(count, types.IntegerLiteral)):
        return None

    def codegen(context, builder, sig, llargs):
        array = context.make_array(sig.args[0])(context, builder, llargs[0])
        for slot in range(count.literal_value):
            value = builder.load(_hash_global(builder.module, slot))
            builder.store(value, builder.gep(array.data, [context.get_constant(types.intp, slot)]))
        return context.get_dummy_value()
    return types.none(out, count), codegen


def _hash_global(module, slot):
    """The constant holding call site `slot`'s kernel hash in the program's LLVM module (0 until kcall sets it):
    the call sites and the hash table are lowered in either order."""
    name = f"fastedf_kernel_hash_{slot}"
    try:
        return module.get_global(name)
    except KeyError:
        variable = ir.GlobalVariable(module, ir.IntType(64), name)
        variable.linkage, variable.global_constant = "internal", True
        variable.initializer = ir.Constant(ir.IntType(64), 0)
        return variable


def by_address(text, kernels, table="kernels", first_slot=0):
    """`text` with every call of a name in `kernels` made a kcall through `table`, slots numbered from
    `first_slot`; returns (text, the called names in slot order)."""
    return _rewrite_calls(text, kernels,
                          lambda name, args, i: f"kcall({name}, {table}, {first_slot + i}, {args})")


def inlined(text, kernels):
    """`text` with every call of a name in `kernels` made an icall (inlined by LLVM)."""
    return _rewrite_calls(text, kernels, lambda name, args, i: f"icall({name}, {args})")[0]


def _rewrite_calls(text, kernels, call):
    """`text` with each call `name(args)` of a name in `kernels` replaced by call(name, args, its number);
    returns (text, the names in order)."""
    names, out, at = [], [], 0
    for match in re.finditer(r"\b([A-Za-z_]\w*)\(", text):
        if match.group(1) not in kernels or match.start() < at:
            continue
        close = _closing(text, match.end())
        out.append(text[at:match.start()])
        out.append(call(match.group(1), text[match.end():close], len(names)))
        names.append(match.group(1))
        at = close + 1
    out.append(text[at:])
    return "".join(out), names


def _closing(text, start):
    """The index of the parenthesis closing the one just before `start`."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses in generated code: {text[start:start + 80]!r}")


def kernels_of(modules):
    """{name: dispatcher} of the Numba kernels defined in `modules`: not their helpers (fastedf.config.helper,
    compiled without a CPython wrapper), which compiled code calls directly, like the arena views."""
    return {name: value for module in modules for name, value in vars(module).items()
            if isinstance(value, CPUDispatcher) and value.py_func.__module__ == module.__name__
            and not value.targetoptions.get("no_cpython_wrapper", False)}


def address(dispatcher, signature_args):
    """The entry point of `dispatcher` compiled (or loaded from Numba's cache) for `signature_args`, and its hash."""
    dispatcher.compile(tuple(signature_args))
    result = dispatcher.overloads[tuple(signature_args)]
    return (result.library.get_pointer_to_function(result.fndesc.llvm_func_name),
            kernel_hash(dispatcher, result.signature))
