"""Reading fastedf's switches from the environment (each module documents its own)."""
import os


def env_flag(name, default):
    """True/False from an environment variable such as FASTEDF_CACHE=0."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")
