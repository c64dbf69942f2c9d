from fastedf.numpy_edf import *  # noqa: F401,F403  the plain NumPy EDF now ships in the package (one copy)
