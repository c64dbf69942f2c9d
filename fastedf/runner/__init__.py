"""`fastedf run SCRIPT.py`: a course script and its own EDF module, run unchanged, their nodes accelerated.

The script runs as `python SCRIPT.py` would.  Every operation node class of
the user's code (a class with `forward` and `backward` defined in a user
file) is timed; once the time in nodes shows that acceleration can pay, each
class is verified: its own `forward`/`backward` run beside fastedf's candidate
implementations of that operation under each known convention, on the
script's own values and on edge probes of a scratch copy.  A class whose
candidate agreed everywhere runs the candidate from then on, guarded by the
shapes it was verified at and re-checked on a thinning schedule; every other
class keeps the user's code.

Modules: command (the command line and the script's run), nodes (finding the
classes and dispatching their calls), candidates (the operations under their
conventions), verify (comparisons, snapshots, probes), report (what happened).
"""
from .command import main

__all__ = ["main"]
