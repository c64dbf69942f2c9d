"""The command line's error type and exit codes: small, so `fastedf run` starts without the study tooling."""
EXIT_USAGE = 2  # argparse's convention for bad command lines
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention for Ctrl-C


class UsageError(Exception):
    """Bad input from the command line or its files; the message is one line naming the problem."""
