"""Draw results.json as a grid of bar charts (run with the tools venv).

One panel per metric ``panel`` (see harness/catalog.py); bars are medians with
min–max whiskers. Usage: python chart.py results.json chart.png
"""

import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = ["#8c8c8c", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#ccb974"]


def panels(data):
    """``{panel title: [metric, ...]}`` in catalog order."""
    out = {}
    for metric in data["metrics"] + data["workers_metrics"]:
        if metric["panel"]:
            out.setdefault(metric["panel"], []).append(metric)
    return out


def color_of(column, labels):
    """The same colour for a column in every panel."""
    return COLORS[list(labels).index(column) % len(COLORS)]


def draw_panel(ax, title, metrics, data, labels):
    """Grouped bars: one group per metric (tick), one bar per column that has data."""
    summary = data["summary"]
    columns = [c for c in labels if any(c in summary.get(m["cell"], {}) for m in metrics)]
    width = 0.8 / max(len(columns), 1)
    for i, column in enumerate(columns):
        xs, medians, low, high = [], [], [], []
        for x, metric in enumerate(metrics):
            stats = summary.get(metric["cell"], {}).get(column, {}).get(metric["field"])
            if stats:
                xs.append(x + (i - (len(columns) - 1) / 2) * width)
                medians.append(stats["median"])
                low.append(stats["median"] - stats["min"])
                high.append(stats["max"] - stats["median"])
        ax.bar(
            xs,
            medians,
            width,
            yerr=[low, high],
            capsize=2,
            label=labels[column],
            color=color_of(column, labels),
        )
    ax.set_title(title, fontsize=10)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([m["tick"] for m in metrics], fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    if columns:
        ax.legend(fontsize=7)


def chart_title(data):
    """Date and CPU, plus a warning when other work took CPU during the wrk runs."""
    text = (
        f"{data.get('title', 'lite_serving benchmark')}, {data['machine']['date']}, {data['machine']['cpu']}"
    )
    shares = sorted(s["values"]["foreign_cpu"] for s in data["samples"] if "foreign_cpu" in s["values"])
    if shares and shares[len(shares) // 2] >= 0.05:
        text += (
            f"\nnoisy: other work took a median {shares[len(shares) // 2]:.0%} of the CPUs during the runs"
        )
    return text


def main(results_path, chart_path):
    data = json.loads(Path(results_path).read_text())
    shown = data["columns"] + data["worker_columns"] + data.get("extra_columns", [])
    labels = {c: data["labels"].get(c, c) for c in shown}
    measured = {t: [m for m in ms if m["cell"] in data["summary"]] for t, ms in panels(data).items()}
    groups = {t: ms for t, ms in measured.items() if ms}
    cols = 2 if len(groups) > 1 else 1
    rows = max(math.ceil(len(groups) / cols), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.6 * rows), squeeze=False)
    for ax, (title, metrics) in zip(axes.flat, groups.items()):
        draw_panel(ax, title, metrics, data, labels)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.suptitle(chart_title(data), fontsize=10)
    fig.tight_layout()
    fig.savefig(chart_path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
