"""Reading fastedf's switches from the environment (each module documents its own)."""
import os
import warnings


def env_flag(name, default):
    """True/False from an environment variable such as FASTEDF_CACHE=0."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


def _env_number(name, default, convert, what):
    """convert(raw) of an environment variable (None: not acceptable); unset gives `default`, anything not
    acceptable warns and gives `default`."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = convert(raw)
    except ValueError:
        value = None
    if value is None:
        warnings.warn(f"fastedf: {name}={raw!r} is not {what}; using {default}", RuntimeWarning, stacklevel=3)
        return default
    return value


def env_threads(name, default):
    """A thread count from an environment variable; anything but an integer >= 1 warns and gives `default`."""
    return _env_number(name, default, lambda raw: n if (n := int(raw)) >= 1 else None,
                       "a thread count (an integer >= 1)")


def env_seconds(name, default):
    """A duration >= 0 from an environment variable; anything else (NaN too) warns and gives `default`."""
    return _env_number(name, default, lambda raw: t if (t := float(raw)) >= 0.0 else None,
                       "a number of seconds >= 0")
