"""`fastedf <subcommand> ...` (also `python -m fastedf`): the command-line entry point.

Subcommands are imported only when called, so `fastedf sweep` does not load
the memory tooling and vice versa.
"""
import importlib
import sys

from .cli import EXIT_USAGE, UsageError

SUBCOMMANDS = {
    "sweep": "the batch-size study: time, loss, accuracy (and memory) against batch size",
    "memory": "peak memory per batch size, each measured under memray in a fresh process",
}


def _run(name, argv):
    try:
        module = importlib.import_module(f"fastedf.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"fastedf.{name}":
            raise  # a missing dependency inside the module: a real error, not a usage one
        raise UsageError(f"the {name} subcommand is not available in this version") from None
    if not hasattr(module, "main"):
        raise UsageError(f"the {name} subcommand is not available in this version")
    return module.main(argv)


def _usage():
    lines = ["usage: fastedf <subcommand> [options]   (fastedf <subcommand> --help for its options)", ""]
    lines += [f"  {name:8s} {text}" for name, text in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    """Run a subcommand; returns its exit code (2 for bad input, with a one-line message on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"fastedf: error: unknown subcommand {name!r} (choose from {', '.join(SUBCOMMANDS)})",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(_run(name, rest) or 0)
    except (UsageError, ValueError) as error:
        message = " ".join(str(error).split())  # one line, whatever the message held
        print(f"fastedf {name}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as done:  # --help and argparse's own exits
        return done.code if isinstance(done.code, int) else 0
    except KeyboardInterrupt:
        print(f"fastedf {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
