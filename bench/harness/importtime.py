"""``-X importtime`` output: where a start spends its import time."""

import statistics

TOP = 15
PREFIX = "import time:"


def import_entries(text):
    """``[(module, own µs, cumulative µs, top-level import that brought it in)]`` from a log."""
    entries = []
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        fields = line[len(PREFIX):].split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue  # the header line
        name = fields[2].rstrip()
        stripped = name.lstrip()
        depth = (len(name) - len(stripped) - 1) // 2  # one space, then two per level of nesting
        entries.append([depth, stripped, int(fields[0]), int(fields[1]), None])
    root = None
    for entry in reversed(entries):  # a module is listed after everything it imported
        if entry[0] == 0:
            root = entry[1]
        entry[4] = root or entry[1]
    return [(name, own, cumulative, via) for _depth, name, own, cumulative, via in entries]


def parse_importtime(texts, top=TOP):
    """The import profile of one or more starts of a server, from their logs.

    Returns ``{"total_ms", "modules", "starts", "top"}``: the import time summed
    over every module (each counted once, by its own time), how many modules were
    imported, and the ``top`` slowest by own time, each as ``{"module", "self_ms",
    "cumulative_ms", "via"}`` where ``via`` is the top-level import that brought it
    in. With several starts every figure is the median over them.
    """
    if isinstance(texts, str):
        texts = [texts]
    runs = [import_entries(text) for text in texts]
    runs = [run for run in runs if run]
    if not runs:
        return None
    own, cumulative, via = {}, {}, {}
    for run in runs:
        for name, own_us, cumulative_us, root in run:
            own.setdefault(name, []).append(own_us)
            cumulative.setdefault(name, []).append(cumulative_us)
            via.setdefault(name, root)
    slowest = sorted(own, key=lambda name: statistics.median(own[name]), reverse=True)[:top]
    return {
        "total_ms": statistics.median(sum(e[1] for e in run) for run in runs) / 1000,
        "modules": round(statistics.median(len(run) for run in runs)),
        "starts": len(runs),
        "top": [{"module": name, "self_ms": statistics.median(own[name]) / 1000,
                 "cumulative_ms": statistics.median(cumulative[name]) / 1000, "via": via[name]}
                for name in slowest],
    }
