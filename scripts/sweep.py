#!/usr/bin/env python
"""Thin wrapper: `python scripts/sweep.py [options]` is `fastedf sweep [options]`."""
import sys

from fastedf.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
