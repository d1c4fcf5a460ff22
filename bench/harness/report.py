"""results.md: ratios first, then absolute numbers, notes and the machine."""

from .catalog import METRICS, WORKER_COUNTS, WORKERS_LOAD, WORKERS_METRICS, workers_column
from .cpuwatch import NOISY_SHARE
from .servers import SERVERS

LITE_COLUMNS = ("lite", "lite-pure", "lite-py", "lite-cli")
BASELINE_COLUMNS = ("reference", "uvicorn", "lite-base")   # lite-base: --baseline REV


def fmt(value):
    """A number with as many digits as are worth reading."""
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value < 0.1:
        return f"{value:.2g}"
    return f"{value:.2f}"


def column_label(column):
    return SERVERS[column].label if column in SERVERS else column


def _stats(summary, metric, column):
    return summary.get(metric.cell, {}).get(column, {}).get(metric.field)


def ratio(summary, metric, lite, other):
    """How many times better ``lite`` is than ``other`` on ``metric`` (>1 = lite better)."""
    a, b = _stats(summary, metric, lite), _stats(summary, metric, other)
    if not a or not b or not a["median"] or not b["median"]:
        return None
    r = a["median"] / b["median"]
    return r if metric.higher_is_better else 1 / r


def absolute(summary, failed, metric, column):
    """``median (min–max)`` for a table cell, or why there is no number."""
    s = _stats(summary, metric, column)
    if s is None:
        return "failed" if (metric.cell, column) in failed else "–"
    text = fmt(s["median"])
    if s["n"] > 1:
        text += f" ({fmt(s['min'])}–{fmt(s['max'])})"
    return text


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _metric_name(metric):
    arrow = "↑" if metric.higher_is_better else "↓"
    return f"{metric.label} ({metric.unit}, {arrow})"


def ratio_section(summary, columns):
    pairs = [
        (lite, other)
        for lite in LITE_COLUMNS
        if lite in columns
        for other in BASELINE_COLUMNS
        if other in columns
    ]
    if not pairs:
        return "No ratios: lite_serving or both baselines are missing from this run.\n"
    header = ["metric"] + [f"{column_label(a)} vs {column_label(b)}" for a, b in pairs]
    rows = []
    for metric in METRICS:
        cells = [ratio(summary, metric, a, b) for a, b in pairs]
        if any(c is not None for c in cells):
            rows.append([_metric_name(metric)] + [f"{c:.2f}×" if c is not None else "–" for c in cells])
    return table(header, rows) + "\n"


def absolute_section(summary, failed, columns, metrics, labels=None):
    rows = []
    for metric in metrics:
        row = [absolute(summary, failed, metric, c) for c in columns]
        if any(v != "–" for v in row):
            rows.append([_metric_name(metric)] + row)
    names = [(labels or {}).get(c) or column_label(c) for c in columns]
    return table(["metric"] + names, rows) + "\n"


def render(data):
    """The whole results.md as a string, from the results.json document ``data``."""
    summary, settings, machine = data["summary"], data["settings"], data["machine"]
    columns = [c for c in data["columns"] if any(c in cols for cols in summary.values())]
    failed = {(s["cell"], s["column"]) for s in data["samples"] if s["error"]}
    out = [
        "# lite_serving benchmark results\n",
        f"Generated {machine['date']} by `{data['command']}`: {settings['rounds']} round(s), "
        f"{settings['duration']} s per wrk run, scenarios {', '.join(settings['scenarios'])}.\n",
        "## Ratios: how many times better lite is (>1 = lite better)\n",
        "Throughput ratios are lite ÷ other, latency/memory/start-up ratios are other ÷ lite; "
        "each is a ratio of medians.\n",
        ratio_section(summary, columns),
        f"## Absolute numbers: median (min–max) over {settings['rounds']} round(s)\n",
        "↑ higher is better, ↓ lower is better. Cold start is over "
        f"{settings['cold_starts']} starts. MB = 10^6 bytes.\n",
        absolute_section(summary, failed, columns, METRICS),
    ]
    worker_columns = [workers_column(n) for n in WORKER_COUNTS]
    if any(c in summary.get(m.cell, {}) for m in WORKERS_METRICS for c in worker_columns):
        out += [
            f"## lite --workers scaling ({WORKERS_LOAD.title}, {WORKERS_LOAD.connections} connections)\n",
            "Nothing is pinned here: the workers and wrk share the machine's "
            f"{machine['cores']} cores, so on 2 cores a second worker competes with wrk for CPU.\n",
            absolute_section(summary, failed, worker_columns, WORKERS_METRICS),
        ]
    if data.get("importtime"):
        out.append(importtime_section(data["importtime"], columns))
    out += [notes_section(data), machine_section(data), METHOD]
    return "\n".join(out)


def importtime_section(profiles, columns):
    """The slowest imports of one cold start of each server (``-X importtime``)."""
    lines = [
        "## Cold start: where import time goes (`-X importtime`, median of a few starts each)\n",
        "Own time of each module (its imports excluded), the slowest first; *via* is the "
        "top-level import that brought it in. `-X importtime` itself slows imports down: "
        "compare the rows, not the totals with the timings above.\n",
    ]
    for column in [c for c in columns if c in profiles] + sorted(set(profiles) - set(columns)):
        profile = profiles[column]
        lines.append(f"### {column_label(column)}: {fmt(profile['total_ms'])} ms in "
                     f"{profile['modules']} modules\n")
        rows = [[f"`{e['module']}`", fmt(e["self_ms"]), fmt(e["cumulative_ms"]), f"`{e['via']}`"]
                for e in profile["top"]]
        lines.append(table(["module", "own ms", "cumulative ms", "via"], rows) + "\n")
    return "\n".join(lines)


def foreign_cpu_notes(samples, noisy=NOISY_SHARE):
    """A line on how much CPU other work took during the wrk runs, if it took any to speak of."""
    shares = sorted(s["values"]["foreign_cpu"] for s in samples if "foreign_cpu" in s["values"])
    if not shares or shares[-1] < noisy:
        return []
    count = sum(share >= noisy for share in shares)
    return [
        f"- other work on the machine took CPU during {count} of {len(shares)} wrk runs "
        f"(up to {shares[-1]:.0%} of all CPUs, median {shares[len(shares) // 2]:.0%}); "
        "those runs are slower and noisier (per-run share: `foreign_cpu` in results.json)"
    ]


def notes_section(data):
    lines = ["## Notes and failures\n"]
    lines += [f"- {n}" for n in data["notes"]]
    lines += foreign_cpu_notes(data["samples"])
    for s in data["samples"]:
        if s["error"]:
            lines.append(
                f"- FAILED run (excluded from medians): {s['cell']}, {s['column']}, round {s['round']}: {s['error']}"
            )
    if len(lines) == 1:
        lines.append("- none: every run answered 200 with no socket errors.")
    return "\n".join(lines) + "\n"


def _percent(fraction):
    return "unknown" if fraction is None else f"{fraction:.0%}"


def machine_section(data):
    m = data["machine"]
    lines = [
        "## Machine\n",
        f"- date: {m['date']}",
        f"- CPU: {m['cpu']}, {m['cores']} cores (servers pinned to CPU {m['server_cpus']}, wrk to CPU {m['client_cpus']})",
        f"- Python {m['python']}, Linux {m['kernel']}, {m['wrk']}",
        f"- CPU use by other work just before the run: {_percent(m['busy_at_start'])} of all cores",
    ]
    for env, versions in data["versions"].items():
        listed = ", ".join(
            f"{name} {version}" for name, version in sorted(versions.items(), key=lambda kv: kv[0].lower())
        )
        lines.append(f"- venv `{env}`: {listed or 'not built'}")
    return "\n".join(lines) + "\n"


METHOD = """## How it was measured

- Each server process runs under `taskset` on one CPU and wrk (`-t1 --latency`, `bench/lua/post.lua`) on another.
- Every round starts each server afresh per scenario, checks one answer for correctness,
  warms it up, runs the wrk loads, reads VmRSS of the server and any processes it forked,
  then stops it. Servers take turns within a round.
- A wrk run with any non-2xx/3xx response or socket error counts as failed and is left out.
- The 4 MiB MessagePack scenario uses wrk too (the body is read by the Lua script);
  MB/s = requests/s × body size.
- Cold start: time from spawning the process to the first correct answer to a predict POST,
  asked in a tight loop from the spawn on (a refused connection or a 503 means "not yet"),
  and the CPU time the server's threads had used by then (from `/proc/PID/task/*/schedstat`,
  less sensitive than wall time to other work on the machine). One discarded start per
  server first; the servers start in an order shuffled anew for every attempt. Then three
  starts each with `-X importtime`. `lite (python predictor.py)` and `lite (lite-serving DIR)`
  are lite started those ways (`lite` is `python -m lite_serving DIR`); they take part in the
  cold start only.
- The reference runs as its users start it: `python predictor.py`, in its default "local"
  mode, with its access log on (written to a file).
- See `bench/README.md` for details.
"""
