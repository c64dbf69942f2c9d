"""What `fastedf run` did: one summary line at exit, and --explain's block per class."""
from . import nodes
from .nodes import median


def _ran(registry):
    """The operation node classes that ran (leaves, helpers that are not nodes and unused classes left out)."""
    return [c for c in registry.classes if c.state not in ("leaf", "other") and (c.calls or c.user_calls
                                                                                 or c.fast_calls)]


def _short(c):
    return c.cls.__qualname__


def _estimate(c):
    """(seconds in this class's calls as run, seconds plain python would have taken).

    Counted for the calls that ran the user's code; for accelerated calls (a
    forward and a backward each), the median times per call of the user's
    code and of the match on verified calls, without the dispatch's own cost;
    calls run by fused programs count on the plain side only.
    """
    run = plain = c.seconds + c.user_seconds
    user, mine = median(c.user_times), median(c.mine_times)
    if c.fast_calls and user is not None:
        run += c.fast_calls * 2 * (mine if mine is not None and not c.user_faster else user)
        plain += c.fast_calls * 2 * user
    fused = c.registry._fuser.fused_calls(c) if c.registry._fuser is not None else 0
    if fused and user is not None:  # the programs' time is the steps', not the class's
        plain += fused * 2 * user
    return run, plain


def _per_call(times):
    return f"{median(times) * 1e6:.1f} us" if times else "not timed"


def plain_seconds(registry):
    """Plain python's estimated time in the script's node methods (recorded for the script's next run)."""
    return sum(seconds for _, seconds in plain_by_class(registry))


def plain_by_class(registry):
    """[(class, plain python's estimated time in its methods)] of the classes that ran."""
    return [(c, _estimate(c)[1]) for c in _ran(registry)]


def summary(registry):
    ran = _ran(registry)
    fast = [c for c in ran if c.match is not None and c.state == "accelerated"]
    left = [c for c in ran if c not in fast]
    run = sum(_estimate(c)[0] for c in ran)
    plain = sum(_estimate(c)[1] for c in ran)
    if not registry.active:
        return (f"fastedf run: no node class accelerated: ~{run:.2f} s in node methods, below the "
                f"{nodes.ACTIVATE_AFTER:.2f} s from which verifying them pays")
    done = "; ".join(f"{_short(c)}: {c.match.candidate.describe()}" for c in fast)
    kept = "; ".join(f"{_short(c)}: {c.reason or 'not verified yet'}" for c in left)
    line = f"fastedf run: {len(fast)} of {len(ran)} node classes accelerated ({done or 'none'})"
    line += f"; {len(left)} left as the user's code" + (f" ({kept})" if kept else "")
    if registry.check:
        line += f"; --check: {sum(c.user_calls for c in ran)} calls compared, " \
                f"{registry.differences} difference(s)"
    return line + _fused_text(registry) + f"; time in nodes {run:.2f} s vs ~{plain:.2f} s plain-python estimate"


def _fused_text(registry):
    """'; N graph(s) fused: F steps fused, E node by node' when any graph was fused or refused."""
    fuser = registry._fuser
    if fuser is None or not (fuser.plans or fuser.refused):
        return ""
    fused, eager = fuser.steps()
    return f"; {len(fuser.plans)} graph(s) fused: {fused} steps fused, {eager} node by node"


def _fused_lines(registry):
    fuser = registry._fuser
    if fuser is None:
        return []
    lines = []
    for plan in fuser.plans:
        names = " -> ".join(type(n).__name__ for n in plan.s.ops)
        lines.append(f"  fused graph {names}: {plan.steps - plan.node_steps} steps fused, "
                     f"{plan.node_steps} node by node")
        lines += [f"    a signature run node by node: {why}" for why in dict.fromkeys(plan.refused.values())]
    lines += [f"  graph of the loss {name}: not fused ({why})" for name, why in fuser.refused.items()]
    return lines


def explain(registry):
    lines = ["fastedf run --explain:"]
    for c in registry.classes:
        if c.state in ("leaf", "other"):
            lines.append(f"  {c.name}: {c.reason}, nothing to accelerate")
            continue
        if c.match is not None and c.state == "accelerated":
            lines.append(f"  {c.name}: accelerated as {c.match.candidate.describe()}")
            lines.append(f"    record: op={c.match.op!r} conventions={c.match.conventions} keys={c.match.keys} "
                         f"rule={c.match.rule} replaces_dict={c.match.replaces_dict}")
            lines.append(f"    calls: {c.verified_calls} verified, {c.fast_calls} accelerated; per forward or backward: "
                         f"the user's code {_per_call(c.user_times)}, the candidate {_per_call(c.mine_times)} "
                         "(medians on verified calls)")
        elif c.state == "counting" or (c.state == "verifying" and not c.user_calls):
            lines.append(f"  {c.name}: user's code (not verified: "
                         + ("not seen running)" if not c.calls else "the script ended before verification paid)"))
            continue
        elif c.state == "verifying":
            lines.append(f"  {c.name}: user's code (still being verified at exit: {c.verified_calls} calls)")
        elif c.slower is not None:
            mine, user = c.slower
            lines.append(f"  {c.name}: user's code (verified as {c.match.candidate.describe()}; node by node "
                         f"~{mine * 1e6:.1f} us a call accelerated against {user * 1e6:.1f} us for the user's code)")
        else:
            lines.append(f"  {c.name}: user's code ({c.reason})")
        for probe in dict.fromkeys(c.probed):  # each finding once, in order, with its count
            count = c.probed.count(probe)
            lines.append(f"    probe {probe}" + (f" ({count} times)" if count > 1 else ""))
        shown = list(c.eliminated.items())
        for cand, difference in shown[:12]:
            lines.append(f"    rejected {cand.describe()}: {difference}")
        if len(shown) > 12:
            lines.append(f"    ... and {len(shown) - 12} more candidates rejected")
    return "\n".join(lines + _fused_lines(registry))
