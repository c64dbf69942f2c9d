"""The user's node classes: found as they are created, timed, verified, then accelerated or given back.

A class statement in a user file (not the standard library, site-packages or
fastedf) that gives a class `forward` and `backward` is an operation node
class (builtins.__build_class__ sees every class statement, in the EDF module
however it is imported and in the script itself).  Its methods are wrapped:

- counting: the user's own methods, untouched: a CPU-time profiling signal
  (SIGPROF, every SAMPLE_SECONDS) looks for them on the stack, so a short
  script pays no wrapper on any call.  Verifying imports fastedf's kernels
  and runs several candidates beside the user's code, which a short script
  cannot repay, so nothing is verified until the sampled time in nodes
  reaches ACTIVATE_AFTER (where SIGPROF is missing, the methods are timed by
  wrappers instead);
- verifying: each call runs the user's code (its values are the ones kept)
  and the surviving candidates beside it; a candidate that differs once is
  dropped.  After VERIFIED_CALLS calls the survivors are probed on scratch
  copies; the first survivor becomes the class's Match;
- accelerated: a call whose node and input signatures (shapes, dtypes) were
  verified runs the Match's candidate; any other call, and the calls 2^k of
  the class (thinning re-checks), are verifying calls;
- user: the original methods are put back: no wrapper, no overhead.  A
  verified class whose accelerated call (its candidate and the dispatch)
  is measured no faster than the user's code is given back too, its Match
  kept, unless --explain or --check asked to run every verified class.

Empty batches always run the user's code.  An error inside this machinery
gives the class back to the user's code, reported once on stderr; an error
raised by the user's own code propagates unchanged.
"""
import builtins
import functools
import marshal
import os
import signal
import sys
import time
import zlib

import numpy as np

from .. import config
from . import verify

# Verifying costs CPU time a short script never repays: the candidates' module 0.02 s, each kernel's first call
# (a load from Numba's cache) ~0.06 s, so 0.3 s for a logistic graph's five, and Numba's own import 0.25 s where
# `import fastedf` has not loaded it (two fresh processes, warm cache, shared machine), then the verified calls
# and probes.  So nothing is verified before the user's node methods have taken ACTIVATE_AFTER, about that cost:
# a script that ends right after pays it at most once more than its own time in nodes (the ski-rental bound).
# FASTEDF_RUN_ACTIVATE_AFTER overrides it (0: verify from the first call).
ACTIVATE_AFTER = config.env_seconds("FASTEDF_RUN_ACTIVATE_AFTER", 0.5)  # not a number >= 0: warned, 0.5
VERIFIED_CALLS = 3  # real calls a candidate must agree on before the probes
FIRST_RECHECK = 16  # accelerated calls of a class re-checked: 16, 32, 64, ...
TIMED_CALLS = 64  # verified calls whose times (the user's code, the match) are kept for the report
SAMPLE_SECONDS = 0.005  # CPU time between two looks at the stack while counting
PAYING_SAMPLES = 6  # timed calls of a match's kernels before deciding whether accelerating it pays
# Before a match loads its kernels (verified with NumPy until then), whether they can repay their cost, assuming the
# class runs as long again as it has so far: Numba's import with the first kernel ~0.15-0.25 s CPU where nothing has
# imported it, each further kernel ~0.06 s at most, two a match, and the kernels' probes and verified calls; against
# the gain per call over the user's code of a kernel call through its candidate (losses 4-5 us, Softmax 3-4 us,
# Sigmoid 2.8 us) with the dispatch (warm caches, shared machine).
KERNEL_CALL_SECONDS = 4e-6
KERNEL_LOAD_SECONDS = 0.06
NUMBA_IMPORT_SECONDS = 0.25
PROBE_SECONDS = 0.05


def _own_dirs():
    """Python's library, every site-packages (the user's own --user one too) and fastedf's directory.

    From `site`, already imported at start-up, not sysconfig.get_paths (0.6 ms of every run)."""
    import site
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.__file__),
            os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    dirs.update(getattr(site, "getsitepackages", list)())
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if user_site:
        dirs.add(user_site)
    return tuple(os.path.abspath(d) + os.sep for d in dirs)


_NOT_USER = _own_dirs()


@functools.lru_cache(maxsize=None)
def user_file(filename):
    """True for a file of the user's: a real path outside Python's, site-packages' and fastedf's directories.

    Cached: every class statement of every module imported asks (matplotlib's thousands among them)."""
    if not filename or filename.startswith("<"):
        return False
    return not os.path.abspath(filename).startswith(_NOT_USER)


class Match:
    """A verified class: what a fused engine needs to lower a node of it.

    op: the operation ("linear", "sigmoid", "bce", ...); conventions: the
    candidate's parameters (formula, input order, reduction, clip, layout...);
    candidate: the object computing forward(vals) and backward(vals, value, g,
    want); keys: the input indices whose gradients the user's backward writes;
    rule: how the upstream gradient is read when a node has several consumers
    ("first", "sum", or None when no such node was seen); replaces_dict: the
    user's backward assigns a new `gradients` dict rather than filling it;
    forms: input signature -> how a scalar value is returned.  A plain class,
    not a dataclass: generating a dataclass's methods costs `fastedf run`'s
    start-up ~2 ms.
    """

    def __init__(self, op, conventions, candidate, keys, rule=None, replaces_dict=False):
        self.op, self.conventions, self.candidate, self.keys = op, conventions, candidate, keys
        self.rule, self.replaces_dict, self.forms = rule, replaces_dict, {}

    def __repr__(self):
        return (f"Match(op={self.op!r}, conventions={self.conventions}, keys={self.keys}, rule={self.rule!r}, "
                f"replaces_dict={self.replaces_dict})")


class _Failed:
    def __init__(self, error):
        self.error = error

    def __str__(self):
        return f"raises {type(self.error).__name__}: {self.error}"


class _Checked:
    """A forward that ran the user's code beside the candidates: its backward is checked too."""

    def __init__(self, key, form):
        self.key, self.form = key, form


class _Entry:
    """An accelerated (node, input signature): what its calls need, looked up once."""

    __slots__ = ("key", "forward", "backward", "gsigs", "keys", "replaces", "loss")

    def __init__(self, key, match, form, gsigs, gradient_forms):
        forward, backward = match.candidate.forward, match.candidate.backward
        self.loss = match.candidate.loss
        self.key, self.gsigs, self.keys, self.replaces = key, gsigs, match.keys, match.replaces_dict
        self.forward = forward if form is None else (lambda vals: form(forward(vals)))
        forms = {i: f for i, f in gradient_forms.items() if f is not None}
        self.backward = backward if not forms else (lambda vals, value, g, keys: {
            i: forms[i](d) if i in forms else d for i, d in backward(vals, value, g, keys).items()})


class _Unsure(Exception):
    """The upstream gradient cannot be read by a verified rule: this call runs the user's code."""


def _named(wrapper, original):
    wrapper.__name__, wrapper.__qualname__ = original.__name__, getattr(original, "__qualname__", original.__name__)
    wrapper.__doc__, wrapper.__wrapped__ = original.__doc__, original
    return wrapper


def _unwrapped(method):
    while hasattr(method, "__wrapped__") and getattr(method, "__module__", None) == __name__:
        method = method.__wrapped__
    return method


class NodeClass:
    """One user class and what fastedf knows of it."""

    def __init__(self, registry, cls):
        self.registry, self.cls = registry, cls
        self.name = f"{cls.__module__}.{cls.__qualname__}"
        self.forward0, self.backward0 = _unwrapped(cls.forward), _unwrapped(cls.backward)
        self.hinted = False  # verifying only the candidate that matched this code last run (Registry.hints)
        self.state, self.reason = "counting", None
        self.calls, self.seconds = 0, 0.0  # user's calls (or samples) while counting and time in them
        self.survivors, self.eliminated, self.match = None, {}, None
        self.verified, self.fast, self.pending = {}, {}, {}
        self.verified_calls = self.fast_calls = 0
        self.next_check = FIRST_RECHECK
        self.due = FIRST_RECHECK  # calls (fused ones too) at which a fused graph's step re-checks the class
        self.accept_at = VERIFIED_CALLS  # verified calls before the probes and the match
        self.resumed = False  # deferred, then found to repay: its kernels are loaded without asking again
        self.rule = self.replaces = self.keys = None
        self.gradient_forms = {}
        self.full_call_passed = False
        self.times, self.user_times = {}, []  # per call on verified calls (the first few): candidates', user's code
        self.user_seconds, self.user_calls = 0.0, 0
        self.probed = []
        self.slower = None  # (accelerated, user's) seconds per call when acceleration would not pay
        self.user_faster = False  # kept for a fused graph, but node by node the user's code is the faster
        self._last_ids, self.weightlike = {}, {}
        if not registry.sample(self):
            self.counting()

    # ---- the class's methods ------------------------------------------------------------------------------

    def _set(self, forward, backward):
        self.cls.forward, self.cls.backward = forward, backward

    def counting(self):
        self._set(self._timed(self.forward0), self._timed(self.backward0))

    def _timed(self, original):
        registry, clock = self.registry, time.perf_counter

        def method(node, *args, **kwargs):
            if not self.calls and not getattr(node, "inputs", True):  # the first call: a leaf is given back now
                self.give_back("a leaf")
                self.state = "leaf"
                return original(node, *args, **kwargs)
            start = clock()
            try:
                return original(node, *args, **kwargs)
            finally:
                spent = clock() - start
                self.seconds += spent
                self.calls += 1
                registry.seconds += spent
                if registry.seconds > ACTIVATE_AFTER and not registry.active:
                    registry.activate()
        return _named(method, original)

    def give_back(self, reason):
        """The user's code from now on, with no wrapper left; its time still sampled, for the records (the
        script's next run decides from them when to verify, and whether a part of a graph repays a program)."""
        self._set(self.forward0, self.backward0)
        self.registry.generation += 1  # a fused graph of the class runs node by node from its next step
        self.state, self.reason = "user", reason
        self.fast.clear()
        self.pending.clear()
        self.registry.sample(self)

    def internal_error(self, error):
        message = f"{type(error).__name__}: {error}"
        print(f"fastedf run: {self.name}: internal error ({message}); the class runs the user's code from now on",
              file=sys.stderr)
        self.give_back(f"fastedf internal error: {message}")

    def verifying(self):
        from . import candidates
        self.state = "verifying"
        self.candidates_module = candidates
        fast, pending, forward0, backward0 = self.fast, self.pending, self.forward0, self.backward0
        signature, ndarray, f64 = verify.signature, np.ndarray, verify.F64
        fuser = self.registry.fuser()
        owners = fuser.owners

        # A node of a fused graph: its plan runs the call, or says it runs node by node (fastedf.runner.fuse).
        # Otherwise the accelerated path: the guard is the node and its inputs' shapes (float64 arrays) or
        # signatures.
        def forward(node, *args, **kwargs):
            if args or kwargs:
                return forward0(node, *args, **kwargs)
            slot = owners.get(id(node))
            if slot is not None:
                plan, k, direct, cut = slot
                if plan.fresh and not plan.done[k]:  # the pass's values stand unless a leaf was fed since
                    read = plan.read
                    for leaf, j in direct:
                        if leaf.value is not read[j]:
                            break
                    else:
                        if not cut or plan.unchanged(cut):
                            plan.done[k] = True
                            if k == plan.last:
                                node.value = plan.layout.loss_of(plan.total)
                            return None
                if plan.forward(node, k):
                    return None
            try:
                vals = [n.value for n in node.inputs]
                key = (id(node), *[v.shape if type(v) is ndarray and v.dtype is f64 else signature(v) for v in vals])
            except Exception:  # noqa: BLE001  not a node of the protocol
                return self.not_a_node(node)
            entry = fast.get(key)
            if entry is not None:
                self.fast_calls += 1
                if self.fast_calls != self.next_check:
                    if self.user_faster:  # kept for its graph's program: until then, the faster code
                        forward0(node)
                    else:
                        try:
                            node.value = entry.forward(vals)
                        except Exception as error:  # noqa: BLE001
                            self.internal_error(error)
                            return forward0(node)
                        pending[id(node)] = entry
                    if entry.loss and not node.outputs:
                        fuser.tick(node)
                    return None
                self.next_check *= 2
            return self.verify_forward(node, vals, key)

        def backward(node, *args, **kwargs):
            if args or kwargs:
                return backward0(node, *args, **kwargs)
            slot = owners.get(id(node))
            if slot is not None:
                plan = slot[0]
                if plan.backed:  # the program's backward ran: its gradients are set
                    plan.back_count += 1
                    if plan.back_count == plan.count:
                        plan.backed = False
                    return None
                if plan.backward(node, slot[1]):
                    return None
            entry = pending.pop(id(node), None)
            if entry is None:  # its forward ran as the user's code only
                return backward0(node)
            if type(entry) is _Checked:
                return self.verify_backward(node, entry)
            try:
                inputs = node.inputs
                vals = [n.value for n in inputs]
                outputs = node.outputs
                if len(outputs) == 1:
                    g = outputs[0].gradients[node]
                elif not outputs:
                    g = None
                else:
                    g = self.upstream(node, outputs)
                if ((id(node), *[v.shape if type(v) is ndarray and v.dtype is f64 else signature(v) for v in vals])
                        != entry.key or (g.shape if type(g) is ndarray and g.dtype is f64 else signature(g))
                        not in entry.gsigs):
                    raise _Unsure
            except Exception:  # noqa: BLE001  unverified here: the user's own code, forward first for its state
                forward0(node)
                return backward0(node)
            try:
                grads = entry.backward(vals, node.value, g, entry.keys)
            except Exception as error:  # noqa: BLE001
                self.internal_error(error)
                forward0(node)
                return backward0(node)
            if entry.replaces:
                node.gradients = {inputs[i]: d for i, d in grads.items()}
            else:
                gradients = node.gradients
                for i, d in grads.items():
                    gradients[inputs[i]] = d
            return None

        self._set(_named(forward, forward0), _named(backward, backward0))

    def upstream(self, node, outputs):
        """The upstream gradient of a node with several consumers, by the rule the user's code was seen to use."""
        if self.rule == "first":
            return outputs[0].gradients[node]
        if self.rule == "sum":
            return sum(n.gradients[node] for n in outputs)
        raise _Unsure

    def not_a_node(self, node):
        self.give_back("not an operation node (no inputs of the protocol)")
        self.state = "other"
        return self.forward0(node)

    # ---- verification ---------------------------------------------------------------------------------------

    def _generators(self, node):
        module = sys.modules.get(self.cls.__module__)
        return verify.generators(vars(node), vars(module) if module is not None else {})

    def verify_forward(self, node, vals, key):
        forward0 = self.forward0
        if not node.inputs:  # a leaf (Input, Parameter): nothing to accelerate
            self.give_back("a leaf")
            self.state = "leaf"
            return forward0(node)
        if not hasattr(node, "__dict__"):  # verifying copies and compares a node's __dict__
            self.give_back("its nodes have no __dict__ (__slots__): fastedf cannot copy one to verify it")
            return forward0(node)
        self.pending.pop(id(node), None)
        if any(type(v) is np.ndarray and v.size == 0 for v in vals):
            return forward0(node)  # an empty batch: always the user's code
        try:
            self._note_weights(node, vals)
            if self.survivors is None:
                self.survivors = self._first_candidates(len(vals))
            results = self._compute(lambda c: c.forward(vals))
            watch = verify.Watch(node, self._generators(node))
        except Exception as error:  # noqa: BLE001
            self.internal_error(error)
            return forward0(node)
        self._user_call(forward0, node, watch)
        try:
            if self._watched(watch):
                user = node.value
                form = verify.form_of(user)
                for c, r in results:
                    self._compare(c, "value", user, _formed(form, r))
                if self.survivors:
                    self.pending[id(node)] = _Checked(key, form)
                else:
                    self._none_left()
        except Exception as error:  # noqa: BLE001
            self.internal_error(error)

    def verify_backward(self, node, checked):
        backward0 = self.backward0
        try:
            vals = [n.value for n in node.inputs]
            outputs = node.outputs
            if len(outputs) > 1:
                upstreams = {"first": outputs[0].gradients[node], "sum": sum(n.gradients[node] for n in outputs)}
            else:
                upstreams = {None: outputs[0].gradients[node] if outputs else None}
        except Exception:  # noqa: BLE001  the user's code will raise or cope: it runs alone
            return backward0(node)
        try:
            want = tuple(range(len(vals)))
            value = node.value
            results = {rule: self._compute(lambda c: c.backward(vals, value, g, want))
                       for rule, g in upstreams.items()}
            before = node.gradients
            watch = verify.Watch(node, self._generators(node))
        except Exception as error:  # noqa: BLE001
            self.internal_error(error)
            return backward0(node)
        self._user_call(backward0, node, watch)
        try:
            if self._watched(watch):
                self._compare_gradients(node, vals, upstreams, results, before)
                if self.survivors:
                    self._verified(node, checked, upstreams)
                else:
                    self._none_left()
        except Exception as error:  # noqa: BLE001
            self.internal_error(error)

    def _note_weights(self, node, vals):
        """Which inputs look like weights: leaves of a Parameter-like class, or whose array stays the same object
        from call to call (updated in place).  Only to name a convention where two read the same computation
        (W @ x with W first is also "x @ A" with the roles swapped)."""
        ids = [id(v) for v in vals]
        last = self._last_ids.get(id(node))
        self._last_ids[id(node)] = ids
        for i, n in enumerate(node.inputs):
            leaf = not getattr(n, "inputs", None)
            named = any(word in type(n).__name__.lower() for word in ("param", "weight", "var"))
            same = last is not None and last[i] == ids[i]
            self.weightlike[i] = leaf and (named or same or self.weightlike.get(i, False))

    def _ranked(self):
        """The survivors, best named first: all of them computed what the user's code computed on every call and
        probe, so this only chooses the words (Multiply or a 1 x 1 "x @ A"?): the family the class's name
        suggests, then the reading of the weight-like inputs as weights."""
        name = self.cls.__name__.lower()

        def score(c):
            named = any(word in name for word in c.names)
            weights = set(c.weight_inputs())
            return (not named, -sum(self.weightlike.get(i, False) == (i in weights)
                                    for i in range(len(self.weightlike))))
        return sorted(self.survivors, key=score)

    def _user_call(self, method, node, watch):
        """The user's method on the real node, watched and timed (its values are the ones kept)."""
        with watch:
            start = time.perf_counter()
            method(node)
            spent = time.perf_counter() - start
        self.user_seconds += spent
        self.user_calls += 1
        if len(self.user_times) < TIMED_CALLS:
            self.user_times.append(spent)

    def _compute(self, run):
        """[(candidate, result or _Failed)] for every candidate still in the running; the match's time noted."""
        found = []
        with np.errstate(all="ignore"):
            for c in self.survivors:
                start = time.perf_counter()
                try:
                    found.append((c, run(c)))
                except Exception as error:  # noqa: BLE001  a candidate that cannot compute this node: dropped
                    found.append((c, _Failed(error)))
                times = self.times.setdefault(c, [])
                if len(times) < TIMED_CALLS:
                    times.append(time.perf_counter() - start)
        return found

    def _compare(self, c, what, user, mine):
        difference = str(mine) if isinstance(mine, _Failed) else verify.differs(user, mine)
        if difference is not None:
            self.drop(c, f"{what}: {difference}")

    def drop(self, c, difference):
        if c in self.eliminated:
            return
        self.eliminated[c] = difference
        self.survivors = [s for s in self.survivors if s is not c]
        if self.match is None or c is not self.match.candidate:
            return
        where = "--check" if self.registry.check else "a re-check"
        self.registry.differences += self.registry.check
        if not self.survivors:
            print(f"fastedf run: {self.name}: {c.describe()} differs from the user's code on {where} ({difference}); "
                  "the class runs the user's code from now on", file=sys.stderr)
            return self.give_back(f"differs from the user's code on {where}: {difference}")
        if self.registry.check:
            print(f"fastedf run: {self.name}: {c.describe()} differs from the user's code on --check ({difference})",
                  file=sys.stderr)
        self.accept()  # the next survivor, verified on every call so far

    def _compare_gradients(self, node, vals, upstreams, results, before):
        self.replaces = node.gradients is not before
        inputs, gradients = node.inputs, node.gradients
        user = {}
        for k, d in gradients.items():
            at = [i for i, n in enumerate(inputs) if n is k]
            if not at:
                for c in self.survivors:
                    self.drop(c, "gradients: the user's code writes a gradient for a node that is not an input")
                return
            user[at[0]] = d
        keys = tuple(sorted(user))
        if self.keys is not None and keys != self.keys:
            for c in self.survivors:
                self.drop(c, f"gradients: the user's code wrote inputs {keys} here and {self.keys} before")
            return
        self.keys = keys
        forms = self.gradient_forms = {i: verify.form_of(user[i]) for i in keys}
        fits = {}
        for rule, found in results.items():
            for c, r in found:
                if isinstance(r, _Failed):
                    fits.setdefault(c, {})[rule] = f"gradients: {r}"
                    continue
                missing = [i for i in keys if i not in r]
                first = (f"no gradient for input {missing[0]}" if missing else
                         next((f"gradient of input {i}: {d}" for i in keys
                               if (d := verify.differs(user[i], _formed(forms[i], r[i]))) is not None), None))
                fits.setdefault(c, {})[rule] = first
        agreeing_rules = set(upstreams)
        for c, by_rule in fits.items():
            ok = {rule for rule, d in by_rule.items() if d is None}
            if not ok:
                self.drop(c, next(iter(by_rule.values())))
            elif not c.loss:
                agreeing_rules &= ok
        if len(upstreams) > 1 and len(agreeing_rules) == 1:
            self.rule = agreeing_rules.pop()

    def _watched(self, watch):
        """False (and the class given back) when the user's call printed or drew random numbers."""
        if watch.printed:
            self.give_back("prints")
        elif watch.random:
            self.give_back("draws random numbers")
        else:
            return True
        return False

    def code_digest(self):
        """What identifies the class's code between runs: its methods' code objects (their file and lines too)."""
        codes = tuple(getattr(m, "__code__", None) for m in (self.forward0, self.backward0))
        try:
            return f"{zlib.crc32(marshal.dumps(codes)):08x}"
        except ValueError:  # not plain Python functions
            return None

    def _first_candidates(self, n_inputs):
        """Every candidate for a node of n_inputs inputs; only the one that matched the same code last run, if
        one did (it is verified as any other; if it fails, every candidate is, from the next call)."""
        every = self.candidates_module.candidates_for(n_inputs)
        hint = self.registry.hints.get(self.code_digest()) if not self.registry.eager else None
        hinted = [c for c in every if c.describe() == hint]
        self.hinted = bool(hinted)
        return hinted or every

    def _none_left(self):
        if self.state == "user":
            return
        if self.hinted:  # last run's match differs here: verify every candidate from the next call
            self.hinted = False
            self.registry.hints.pop(self.code_digest(), None)
            self.survivors, self.eliminated, self.verified, self.times = None, {}, {}, {}
            self.verified_calls, self.full_call_passed = 0, False
            self.pending.clear()
            return
        if not self.full_call_passed:
            self.give_back(f"unknown operation: no candidate computes it ({len(self.eliminated)} tried)")
        else:
            c, difference = next(reversed(self.eliminated.items()))  # the last candidate standing
            self.give_back(f"differs from every candidate (last: {c.describe()}: {difference})")

    def _verified(self, node, checked, upstreams):
        self.full_call_passed = True
        self.verified_calls += 1
        g = next(iter(upstreams.values()))
        gsigs = self.verified.setdefault(checked.key, (checked.form, set(), self.gradient_forms))[1]
        gsigs.add(verify.signature(g))
        if self.match is None and self.verified_calls >= self.accept_at:
            if not self.registry.eager and not self.resumed and not self.worth_probing(node):
                return
            self.probe(node)
            if self.state == "user":
                return
            if not self.survivors:
                return self._none_left()
            self.accept(node)
            if not self.registry.eager and self.state == "accelerated":
                self.paying(node)  # kept (worth_probing decided): only whether the user's code runs meanwhile
        elif self.match is not None and not self.registry.check:
            self._enter(checked.key)
            if not self.registry.eager and not self.paying(node):
                self.give_back("verified, but node by node no faster than the user's code")

    def may_fuse(self, node):
        """Whether the node's graph may run as a fused program (fastedf.runner.fuse), where node-by-node costs
        do not apply: a class that would not pay node by node is then kept accelerated."""
        from . import fuse
        return fuse.may_fuse(self.registry, node)

    def worth_probing(self, node):
        """Before the probes, which cost more than the verified calls: False (and the class given back or
        deferred) when the leading candidate, as timed on the verified calls, cannot pay."""
        c = self._ranked()[0]
        if self.may_fuse(node):
            return True
        if c.kernels:
            if not self.repays():
                self.defer()
                return False
            return True
        mine, user = median(self.times.get(c, [])), median(self.user_times)
        if mine is not None and user is not None and mine + self.registry.dispatch_seconds >= user:
            self.slower = (mine + self.registry.dispatch_seconds, user)
            self.give_back("verified, but node by node no faster than the user's code")
            return False
        return True

    def paying(self, node):
        """False (and `slower` set) when the match's calls, with the dispatch's cost, are measured no faster than
        the user's code (medians of the verified calls, each method call its own sample).  A class whose graph
        may fuse is kept, and runs the user's code node by node meanwhile where that is the faster."""
        if len(self.mine_times) < PAYING_SAMPLES:  # still loading
            return True
        mine, user = median(self.mine_times), median(self.user_times)
        faster = user is None or mine + self.registry.dispatch_seconds < user
        if self.may_fuse(node):
            self.user_faster = not faster
            return True
        if faster:
            return True
        self.slower = (mine + self.registry.dispatch_seconds, user)
        return False

    def defer(self):
        """The user's code, with no wrapper, until the class's sampled time shows its kernels repay loading."""
        self.give_back("verified, but its kernels would not repay their loading yet "
                       f"(the user's code takes {median(self.user_times) * 1e6:.1f} us a call)")
        self.state = "deferred"
        self.registry.sample(self)

    def resume(self):
        """A deferred class that now repays: its match's kernels verified on the next calls, then accelerated."""
        self.match, self.reason, self.resumed, self.accept_at = None, None, True, self.verified_calls + 1
        self.verifying()

    def repays(self):
        """Whether the match's kernels can save more than loading them costs: the class running as long again as
        it has so far, or for the rest of what its whole run took last time (fastedf.runner.records), if longer."""
        user = median(self.user_times)
        gain = user - KERNEL_CALL_SECONDS - self.registry.dispatch_seconds
        if gain <= 0:
            return False
        cost = 2 * KERNEL_LOAD_SECONDS + PROBE_SECONDS + (0.0 if "numba" in sys.modules else NUMBA_IMPORT_SECONDS)
        so_far = self.seconds + self.user_seconds
        ahead = max(so_far, self.registry.expected.get(self.name, 0.0) - so_far)
        return gain * ahead / user > cost

    @property
    def mine_times(self):
        return self.times.get(self.match.candidate, []) if self.match is not None else []

    def accept(self, node=None):
        c = self._ranked()[0]
        self.match = Match(c.op, c.conventions, c, self.keys, self.rule, bool(self.replaces))
        self.state = "accelerated"
        c.use_kernels = c.use_kernels or not c.kernels  # NumPy only: the path verified is the one that runs
        # Its kernels' path: verified again, on the probes now and on real calls next.  Not where the graph may
        # fuse: the program calls the kernels, and is checked against the candidates itself (fastedf.runner.fuse)
        if not c.use_kernels and not (node is not None and self.may_fuse(node)):
            config.activate()  # Numba's kernels, whose loading `repays` counted, not the NumPy tier's twins
            c.use_kernels = True
            self.times[c] = []
            self.verified.clear()
            self.fast.clear()
            if node is not None:
                self.probe(node, family_only=type(c))
            return
        self.fast.clear()
        if not self.registry.check:
            for key in self.verified:
                self._enter(key)

    def _enter(self, key):
        form, gsigs, gradient_forms = self.verified[key]
        self.match.forms[key[1:]] = form
        self.fast[key] = _Entry(key, self.match, form, gsigs, gradient_forms)

    # ---- probes ---------------------------------------------------------------------------------------------

    def probe(self, node, family_only=None):
        """Replay the last call twice on one scratch copy (state, randomness), then each family's edge probes
        (only family_only's, for a match that has just switched to its kernels)."""
        vals = [n.value for n in node.inputs]
        consumers = 1 if node.outputs else 0
        gens = self._generators(node)
        if family_only is not None:
            for name, probe_vals in family_only.probes(vals):
                self._probe_one(node, name, probe_vals, consumers, gens)
            return
        try:
            copy = verify.scratch(node, vals, consumers)
        except Exception as error:  # noqa: BLE001
            return self.give_back(f"fastedf could not copy a node of the class to probe it ({_Failed(error)})")
        first, second = (self._on_scratch(copy, gens) for _ in range(2))  # the second call sees what the first left
        for run in (first, second):
            if isinstance(run, _Failed):
                return self.give_back(f"fastedf could not replay its call on a copy (the user's code {run})")
            if run[3]:
                return self.give_back("prints")
        if verify.differs(first[0], second[0]) is not None:
            return self.give_back("draws random numbers (a replay gave another value)")
        if not verify.same_attributes(first[2], second[2]):
            changed = sorted(k for k in first[2] if k not in second[2] or not verify.same_attributes(
                {k: first[2][k]}, {k: second[2][k]}))
            return self.give_back(f"keeps state between calls ({', '.join(changed) or 'its attributes'} change)")
        families = []
        for c in self.survivors:
            if type(c) not in families:
                families.append(type(c))
        for family in families:
            with np.errstate(all="ignore"):
                probes = family.probes(vals)
            for name, probe_vals in probes:
                self._probe_one(node, name, probe_vals, consumers, gens)

    def _on_scratch(self, copy, gens):
        """(value, gradients by input index, attributes, printed, upstream) of the user's code on a scratch copy."""
        node, stands, outs = copy
        try:
            with verify.quiet(gens) as captured:
                self.forward0(node)
                value = node.value
                g = None
                if outs:
                    g = np.random.default_rng(7).normal(size=np.shape(value))
                    g = outs[0].gradients[node] = g if np.ndim(value) else type(value)(g)
                self.backward0(node)
            grads = {i: node.gradients[s] for i, s in enumerate(stands) if s in node.gradients}
            return value, grads, verify.attributes(node), bool(captured.getvalue()), g
        except Exception as error:  # noqa: BLE001  the user's code fails on this probe: it tells nothing
            return _Failed(error)

    def _probe_one(self, node, name, vals, consumers, gens):
        try:
            copy = verify.scratch(node, vals, consumers)
        except Exception as error:  # noqa: BLE001
            self.probed.append(f"{name}: inconclusive, no copy ({_Failed(error)})")
            return
        user = self._on_scratch(copy, gens)
        if isinstance(user, _Failed):
            self.probed.append(f"{name}: inconclusive, the user's code {user}")
            return
        value, grads, _, printed, g = user
        if printed:
            return self.give_back("prints")
        form = verify.form_of(value)
        keys = self.keys or ()
        dropped = 0
        with np.errstate(all="ignore"):
            for c in list(self.survivors):
                try:
                    mine = c.forward(vals)
                    mine = mine if form is None else form(mine)
                    difference = verify.differs(value, mine)
                    if difference is None:
                        got = c.backward(vals, mine, g, keys)
                        difference = next((f"gradient of input {i}: {d}" for i in keys if i in grads
                                           if (d := verify.differs(grads[i], _formed(verify.form_of(grads[i]),
                                                                                     got.get(i)))) is not None), None)
                    else:
                        difference = f"value: {difference}"
                except Exception as error:  # noqa: BLE001
                    difference = str(_Failed(error))
                if difference is not None:
                    self.drop(c, f"probe with {name}: {difference}")
                    dropped += 1
        self.probed.append(f"{name}: {dropped} candidate(s) dropped")


def median(times):
    return sorted(times)[len(times) // 2] if times else None


def _dispatch_seconds():
    """What an accelerated call costs beyond its candidate's own work: the guard (inputs' values, their
    signatures, the lookup) and the wrapper's call, timed on a stand-in node of two (1, 1) inputs."""
    node = verify.StandIn()
    node.inputs = [verify.StandIn(np.ones((1, 1))), verify.StandIn(np.ones((1, 1)))]
    table, ndarray, f64 = {}, np.ndarray, verify.F64

    def call(node, *args, **kwargs):
        vals = [n.value for n in node.inputs]
        return table.get((id(node), *[v.shape if type(v) is ndarray and v.dtype is f64 else None for v in vals]))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(200):
            call(node)
        best = min(best, (time.perf_counter() - start) / 200)
    return 2 * best  # the backward's guard is the same again


def _formed(form, result):
    """result in the user's form (None: as it is), or the failure to convert it."""
    if form is None or isinstance(result, _Failed):
        return result
    try:
        return form(result)
    except Exception as error:  # noqa: BLE001
        return _Failed(error)


class Registry:
    """Every node class of the user's code, and the class-statement hook that finds them."""

    def __init__(self, check=False, eager=False):
        self.check, self.eager = check, eager
        self.expected = {}  # class name -> seconds plain python took in its methods last run (records)
        self.expected_total = 0.0  # the script's node methods, all of them, last run (records)
        self.hints = {}  # a class's code digest -> the candidate that matched it last run (records)
        self.dispatch_seconds = 0.0
        self.classes = []
        self.seconds = 0.0  # in the user's node methods while counting
        self.active = eager
        self.differences = 0
        self._build_class = None
        self._codes, self._sampler = {}, None  # code object -> NodeClass; the signal handler and timer replaced
        self.generation = 0  # classes given back so far
        self._fuser = None

    def fuser(self):
        """The fused graphs (fastedf.runner.fuse), made when the first class is verified."""
        if self._fuser is None:
            from .fuse import Fuser
            self._fuser = Fuser(self)
        return self._fuser

    def install(self):
        original = self._build_class = builtins.__build_class__

        def build_class(func, name, *bases, **kwargs):
            cls = original(func, name, *bases, **kwargs)
            try:
                if (isinstance(cls, type) and user_file(getattr(func, "__code__", None) and func.__code__.co_filename)
                        and callable(getattr(cls, "forward", None)) and callable(getattr(cls, "backward", None))):
                    self.add(cls)
            except Exception as error:  # noqa: BLE001  never in the way of the user's class statement
                print(f"fastedf run: internal error on class {name} ({type(error).__name__}: {error}); "
                      "it runs as the user's code", file=sys.stderr)
            return cls
        builtins.__build_class__ = build_class

    def uninstall(self):
        if self._build_class is not None:
            builtins.__build_class__ = self._build_class

    def add(self, cls):
        entry = NodeClass(self, cls)
        self.classes.append(entry)
        if self.active:
            self._activate_one(entry)

    def sample(self, entry):
        """Count the class's time by sampling the stack (False where SIGPROF cannot be used: timed wrappers)."""
        if self.active and entry.state not in ("deferred", "user"):
            return True
        if self._sampler is None:
            try:
                handler = signal.signal(signal.SIGPROF, self._look)
            except (AttributeError, ValueError, OSError):  # no SIGPROF (Windows), or not the main thread
                return False
            self._sampler = (handler, signal.setitimer(signal.ITIMER_PROF, SAMPLE_SECONDS, SAMPLE_SECONDS))
        for method in (entry.forward0, entry.backward0):
            code = getattr(method, "__code__", None)
            if code is not None:
                self._codes.setdefault(code, entry)
        return True

    def _look(self, signum, frame):
        """SIGPROF: charge SAMPLE_SECONDS to the innermost node method on the stack."""
        codes = self._codes
        while frame is not None:
            entry = codes.get(frame.f_code)
            if entry is not None:
                if self.active and entry.state not in ("deferred", "user"):
                    return
                entry.seconds += SAMPLE_SECONDS
                if self.active and entry.state == "user":  # given back: only counted
                    return
                if entry.state == "deferred":
                    if entry.repays():
                        entry.state = "verifying"
                        entry._set(self._activating(entry, "forward", entry.resume),
                                   self._activating(entry, "backward", entry.resume))
                    return
                entry.calls += 1
                self.seconds += SAMPLE_SECONDS
                if self.seconds > ACTIVATE_AFTER and not self.active:
                    self._stop_sampling()
                    self._arm()
                return
            frame = frame.f_back

    def _stop_sampling(self):
        if self._sampler is not None:
            handler, timer = self._sampler
            self._sampler = None
            signal.setitimer(signal.ITIMER_PROF, *timer)
            signal.signal(signal.SIGPROF, handler)

    def _arm(self):
        """From the signal handler, which must not import or verify: each class's next call activates."""
        for entry in self.classes:
            if entry.state == "counting":
                entry._set(self._activating(entry, "forward"), self._activating(entry, "backward"))

    def _activating(self, entry, name, start=None):
        def method(node, *args, **kwargs):
            if getattr(entry.cls, name) is method:  # the first of the calls: start
                (start or self.activate)()
            return getattr(entry.cls, name)(node, *args, **kwargs)
        return _named(method, getattr(entry, name + "0"))

    def activate(self):
        """Start verifying: the time in nodes shows that loading the candidates will pay."""
        if self.active:
            return
        self._stop_sampling()
        self.active = True
        self.dispatch_seconds = _dispatch_seconds()
        for entry in self.classes:
            self._activate_one(entry)

    def _activate_one(self, entry):
        if entry.state != "counting":
            return
        try:
            entry.verifying()
        except Exception as error:  # noqa: BLE001
            entry.internal_error(error)

    def matches(self):
        """[(code digest, the matched candidate's description)] of the classes a candidate matched."""
        found = []
        for entry in self.classes:
            digest = entry.code_digest() if entry.match is not None else None
            if digest is not None:
                found.append((digest, entry.match.candidate.describe()))
        return found

    def finish(self):
        """Put every class's own methods back (atexit code of the script runs the user's code)."""
        self._stop_sampling()
        if self._fuser is not None:
            self._fuser.finish()
        for entry in self.classes:
            if entry.state in ("counting", "verifying", "accelerated"):
                entry._set(entry.forward0, entry.backward0)
