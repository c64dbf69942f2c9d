"""Numbers and tables as plain text for people: times, durations, byte counts, Markdown tables."""


def format_time(seconds):
    """A measured time with a readable unit: 1.23 ms."""
    if seconds == 0:
        return "0 s"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_duration(seconds):
    """A long estimate: 3.2 days, 41 years (the largest unit that keeps the number >= 1)."""
    for unit, scale in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= scale:
            return f"{_number(seconds / scale)} {unit}"
    return f"{seconds:.3g} s"


def format_bytes(n):
    """A byte count with a binary unit, as memory is counted: 1.5 KiB, 3.2 GiB."""
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{_number(n / scale)} {unit}"
    return f"{n:.0f} B"


def markdown_table(header, rows):
    """A Markdown table: the header row, then one row per tuple of cells, each as many cells as the header.

    A | inside a cell (|G|² in a header) is escaped, so it does not split the
    cell; a line break becomes a space.
    """
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a table row has {len(row)} cells for {len(header)} columns: {row!r}")
    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(row) for row in rows])


def _number(x):
    """3 significant digits, without an exponent below 10**15: 7,080 rather than 7.08e+03."""
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}" if x < 1e15 else f"{x:.3g}"
