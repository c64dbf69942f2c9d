"""`fastedf run` runs real-style course scripts unchanged: each student's EDF variant in tests/run_variants/.

For every variant, `python SCRIPT` and `python -m fastedf run --explain SCRIPT` (same directory, same
argv) must print the same stdout (numbers to 1e-10 relative, timing lines masked) and exit with the same
status; --explain must describe each node class with the convention tokens the manifest lists, and name
the classes that stay the user's code with the reason. Nothing is skipped: without fastedf.runner these
tests fail, as they state what `fastedf run` must do.
"""
import functools
import re
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tests" / "run_variants"))
from compare import command, environment, first_difference  # noqa: E402
from manifest import VARIANTS  # noqa: E402

NAMES = sorted(VARIANTS)
# A class's block in --explain: "  module.Class: accelerated as ..." or "  module.Class: user's code (...)",
# followed by its indented detail lines.
BLOCK_HEADER = re.compile(r"^\s+(?P<module>[\w.]+)\.(?P<cls>\w+): (?P<verdict>accelerated as|user's code)(?P<rest>.*)$")


@functools.lru_cache(maxsize=None)
def run(name, under_fastedf):
    """CompletedProcess of the variant's script, plain or under `fastedf run --explain` (run once per test session)."""
    variant = VARIANTS[name]
    argv, cwd = command(name, variant, ["--explain"] if under_fastedf else None)
    return subprocess.run(argv, cwd=cwd, env=environment(), capture_output=True, text=True,
                          timeout=60 + 20 * variant.seconds)


def tail(text, lines=25):
    """The last lines of a long stderr, for a failure message that stays readable."""
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if len(kept) == len(text.splitlines()) else "...\n" + "\n".join(kept)


def explain_blocks(stderr):
    """{(module, class): (verdict, block text)} from --explain's output."""
    blocks, current = {}, None
    for line in stderr.splitlines():
        header = BLOCK_HEADER.match(line)
        if header:
            current = (header["module"], header["cls"])
            blocks[current] = [header["verdict"], line]
        elif current and line.startswith("    "):
            blocks[current][1] += "\n" + line
        else:
            current = None
    return {key: tuple(value) for key, value in blocks.items()}


def block_for(blocks, key, stderr):
    """The block of class `key` ("Class" or "module.Class"); fails naming what --explain said."""
    found = [value for (module, cls), value in blocks.items() if key in (cls, f"{module}.{cls}")]
    assert len(found) == 1, f"--explain has {len(found)} blocks for {key}; it printed:\n{stderr}"
    return found[0]


@pytest.mark.parametrize("name", NAMES)
def test_fastedf_run_prints_what_plain_python_prints(name):
    plain, fast = run(name, False), run(name, True)
    assert plain.returncode == VARIANTS[name].exit_status, f"the variant itself failed:\n{tail(plain.stderr)}"
    assert fast.returncode == plain.returncode, (
        f"exit status {fast.returncode} under fastedf run, {plain.returncode} under python:\n{tail(fast.stderr)}")
    difference = first_difference(plain.stdout, fast.stdout)
    assert difference is None, f"{difference}\nfastedf run's stderr:\n{tail(fast.stderr)}"
    if plain.returncode not in (0, None) and plain.stderr.strip():
        # an uncaught exception or a message before exit: its last line is the user's, word for word
        assert plain.stderr.strip().splitlines()[-1] in fast.stderr


@pytest.mark.parametrize("name", NAMES)
def test_explain_names_each_class_and_its_conventions(name):
    variant, fast = VARIANTS[name], run(name, True)
    blocks = explain_blocks(fast.stderr)
    for cls, tokens in variant.conventions.items():
        verdict, text = block_for(blocks, cls, fast.stderr)
        assert verdict == "accelerated as", f"{cls} was not accelerated:\n{text}"
        verdict_line = text.splitlines()[0]  # the match's own description, not a rejected candidate's
        for token in tokens:
            options = token if isinstance(token, tuple) else (token,)
            assert any(option in verdict_line for option in options), (
                f"{cls}: {' or '.join(options)!r} missing in\n{text}")
    for cls, reason in variant.users_code.items():
        verdict, text = block_for(blocks, cls, fast.stderr)
        reasons = reason if isinstance(reason, tuple) else (reason,)
        assert verdict == "user's code", f"{cls} must stay the user's code ({' or '.join(reasons)}):\n{text}"
        assert any(r in text.splitlines()[0] for r in reasons), (
            f"{cls}: the reason must say {' or '.join(map(repr, reasons))}:\n{text}")
    assert any(line.startswith("fastedf run:") for line in fast.stderr.splitlines()), (
        f"no 'fastedf run:' summary line on stderr:\n{tail(fast.stderr)}")
