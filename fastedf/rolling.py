"""Loop rolling for generated training programs: repeated layers become one loop over their buffers.

The compile rules (fastedf.ops) write each operation's step as source lines
over buffer names that carry the node's number (v5, p6, d6...).  The layers
of a deep MLP give the same lines but for those numbers, and a program that
repeats them grows, and takes longer to compile, with every layer.  Here a
run of k >= 2 consecutive groups of operations whose lines match up to
renaming becomes `for layer in range(k)` that takes layer l's buffers from
a table (fastedf.compiler.Program), so the program's length, and its compile
time, stop growing with depth.

The loop runs the same statements in the same order as the repeated lines
(backward sections in reverse), so every number is unchanged.  A group rolls
only when each renamed buffer has one array type across the groups (one
line of source must view them all) and its lines assign no local name (a
local of one section read in another would keep only the last layer's).
"""
import re

# Buffer names of the compiler's scheme (fastedf.compiler): a letter, the node's number, an extra buffer's suffix.
NAME = re.compile(r"\b([xsfpqdeVGvgwa])(\d+)(_[A-Za-z]\w*)?\b")
ASSIGNS = re.compile(r"^\s*[A-Za-z_]\w*(\s*,\s*[A-Za-z_]\w*)*\s*=[^=]", re.M)
SECTIONS = ("forward", "backward", "accumulate", "update")
MAX_GROUP = 8  # operations in one repeated group
ROLLED = {"p", "q", "d", "e", "a", "v", "g"}  # the buffers that can differ from layer to layer
VIEWS = {"v": "V", "g": "G"}  # a batch view: the loop views the full buffer, then slices the batch's rows


class Segment:
    """Operations ops[start:start + length * repeats], `length` per group; repeats == 1: not rolled.

    names: per group, its buffer names in order of first appearance (canonical), so slot s of every group
    is the same role.
    """

    def __init__(self, start, length, repeats, names=()):
        self.start, self.length, self.repeats, self.names = start, length, repeats, names


def group_lines(units, start, length):
    """The sections of units[start:start + length] as one group: backward in reverse order."""
    group = units[start:start + length]
    return {section: [line for unit in (reversed(group) if section == "backward" else group)
                      for line in unit[section]] for section in SECTIONS}


def canonical(lines):
    """(text, names): the group's lines with every buffer name replaced by its order of first appearance."""
    names = {}

    def slot(match):
        number = names.setdefault(match.group(0), len(names))
        return f"{match.group(1)}@{number}{match.group(3) or ''}"

    text = "\n--\n".join("\n".join(lines[section]) for section in SECTIONS)
    return NAME.sub(slot, text), list(names)


def segments(units, kind):
    """Split the operations' units into segments, rolling at each point the run that covers most operations."""
    texts = {}

    def text(start, length):  # each group's canonical form once: the search stays linear in the graph's size
        if (start, length) not in texts:
            texts[start, length] = canonical(group_lines(units, start, length))
        return texts[start, length]

    found, start = [], 0
    while start < len(units):
        best = Segment(start, 1, 1)
        for length in range(1, min(MAX_GROUP, len(units) - start) + 1):
            first, names = text(start, length)
            if ASSIGNS.search(first):
                continue
            kinds, repeats = [kind(name) for name in names], 1
            while start + (repeats + 1) * length <= len(units):
                other, others = text(start + repeats * length, length)
                if other != first or any(
                        b != a and (NAME.match(a).group(1) not in ROLLED or kind(b) != k)
                        for a, b, k in zip(names, others, kinds)):
                    break
                repeats += 1
            if repeats > 1 and length * repeats > best.length * best.repeats:
                best = Segment(start, length, repeats, [text(start + t * length, length)[1] for t in range(repeats)])
        found.append(best)
        start += best.length * best.repeats
    return found


def emit(units, found, view, repeats):
    """Each section's lines (SECTIONS), a rolled segment as a loop over its layers.

    units: per operation, in graph order, its lines by section;  found: segments(units, kind);
    view(names): source for the loop's current layer's buffer, names[l] in layer l;
    repeats(k): source for a loop's trip count k.
    """
    out = {section: [] for section in SECTIONS}
    for number, seg in enumerate(found):
        groups = [group_lines(units, seg.start + t * seg.length, seg.length) for t in range(seg.repeats)]
        if seg.repeats == 1:
            for section in SECTIONS:
                _add(out, section, groups[0][section])
            continue
        rename, count = {}, repeats(seg.repeats)
        for slot, names in enumerate(zip(*seg.names)):
            if len(set(names)) == 1:
                continue  # the same buffer in every layer (the labels)
            letter = NAME.match(names[0]).group(1)
            local = f"{letter}_{number}_{slot}"
            storage = [VIEWS.get(letter, letter) + name[1:] for name in names]
            rename[names[0]] = (local, f"{local} = {view(storage)}" + ("[:n]" if letter in VIEWS else ""))
        for section in SECTIONS:
            body = [NAME.sub(lambda m: rename.get(m.group(0), (m.group(0),))[0], line)
                    for line in groups[0][section]]
            if not body:
                continue
            used = [bind for local, bind in rename.values() if re.search(rf"\b{local}\b", "\n".join(body))]
            loop = (f"for layer in range({count} - 1, -1, -1):" if section == "backward"
                    else f"for layer in range({count}):")
            _add(out, section, [loop] + ["    " + line for line in used + body])
    return out


def _add(out, section, lines):
    """Append a segment's lines to its section; backward sections run from the last segment to the first."""
    out[section] = out[section] + lines if section != "backward" else lines + out[section]
