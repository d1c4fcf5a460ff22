"""batching.md: the goals first, then ratios, the model-only ceiling, absolute numbers, answers, notes."""

from .batch_catalog import CONNECTIONS, MODEL_ONLY, MODELS, answers_cell, load_cell, model_only_cell
from .catalog import Metric
from .report import absolute_section, fmt, machine_section, notes_section, table

BATCHED_LITE = ("lite-batched", "lite-zero-code")
THROUGHPUT_GOAL = 1.3  # lite batched ÷ LitServe batched, on the real model
ADDED_P50_GOAL = 0.05  # batching's added p50 at 1 connection


def _median(summary, cell, column, name):
    stats = summary.get(cell, {}).get(column, {}).get(name)
    return stats["median"] if stats else None


class Reader:
    """Medians, labels and reasons for missing numbers, from the results.json document."""

    def __init__(self, data):
        self.data = data
        self.summary = data["summary"]
        self.labels = data["labels"]
        self.skipped = {(s["column"], s["model"]): s["reason"] for s in data["skipped"]}

    def median(self, cell, column, name):
        return _median(self.summary, cell, column, name)

    def missing(self, columns, model):
        """Why one of ``columns`` has no number for ``model``."""
        for column in columns:
            if column not in self.data["columns"]:
                return f"{self.labels.get(column, column)} not selected"
            if (column, model) in self.skipped:
                return f"{self.labels[column]} skipped: {self.skipped[(column, model)]}"
        return "no successful run"

    def quotient(self, model, a, b, connections, name="rps"):
        """Median of ``a`` ÷ median of ``b`` (``b`` may be the model-only ceiling), or why not."""
        x = self.median(load_cell(model, connections), a, name)
        if b == MODEL_ONLY:
            y = self.median(model_only_cell(model), MODEL_ONLY, "rps")
        else:
            y = self.median(load_cell(model, connections), b, name)
        if x is None or y is None or not y:
            return None, self.missing([a] + ([] if b == MODEL_ONLY else [b]), model)
        return x / y, None


def _goal_rows(reader, model, column):
    label = reader.labels.get(column, column)
    rows = []
    for other in ("litserve-tuned", "litserve-batched"):
        for c in (32, 256):
            value, why = reader.quotient(model, column, other, c)
            verdict = "" if value is None else ("met" if value >= THROUGHPUT_GOAL else "not met")
            rows.append(
                [
                    f"{label} ÷ {reader.labels.get(other, other)}, throughput at {c} conn",
                    f"{value:.2f}×" if value is not None else why,
                    f"≥ {THROUGHPUT_GOAL}×" if model == "minilm" else "(≥ 1.3× is for MiniLM)",
                    verdict if model == "minilm" else "",
                ]
            )
    for c in (32, 256):
        value, why = reader.quotient(model, column, MODEL_ONLY, c)
        rows.append(
            [
                f"{label} ÷ model-only ceiling (batch {reader.data['settings']['batch_size']}), throughput at {c} conn",
                f"{value:.0%}" if value is not None else why,
                "report (about 90% expected for MiniLM)",
                "",
            ]
        )
    value, why = reader.quotient(model, column, "lite", 1, "p50_ms")
    rows.append(
        [
            f"batching's added p50 at 1 conn: {label} ÷ lite (predict) − 1",
            f"{value - 1:+.1%}" if value is not None else why,
            f"< {ADDED_P50_GOAL:.0%}",
            "" if value is None else ("met" if value - 1 < ADDED_P50_GOAL else "not met"),
        ]
    )
    return rows


def goals_section(reader):
    out = ["## Goals\n"]
    for model in reader.data["settings"]["models"]:
        rows = []
        for column in BATCHED_LITE:
            if column not in reader.data["columns"] or (column, model) in reader.skipped:
                rows.append([reader.labels.get(column, column), reader.missing([column], model), "", ""])
            else:
                rows += _goal_rows(reader, model, column)
        out += [f"### {MODELS[model].title}\n", table(["ratio", "value", "goal", ""], rows) + "\n"]
    return "\n".join(out)


RATIO_PAIRS = (
    ("lite-batched", "litserve-tuned"),
    ("lite-batched", "lite"),
    ("lite", "litserve"),
    ("lite", "litserve-batched"),
    ("lite", "litserve-tuned"),
    ("lite", "reference"),
    ("litserve-batched", "litserve"),
    ("litserve-tuned", "litserve"),
)


def ratios_section(reader):
    """How many times better a column is than another: throughput a ÷ b, latency b ÷ a."""
    out = [
        "## Ratios between columns (>1 = the first is better)\n",
        "Throughput is first ÷ second, latency second ÷ first; each a ratio of medians.\n",
    ]
    for model in reader.data["settings"]["models"]:
        pairs = [
            (a, b) for a, b in RATIO_PAIRS if a in reader.data["columns"] and b in reader.data["columns"]
        ]
        rows = []
        for connections, name, text in (
            [(c, "rps", f"throughput, {c} conn") for c in (32, 256)]
            + [(c, "p50_ms", f"p50, {c} conn") for c in (1, 32)]
            + [(c, "p99_ms", f"p99, {c} conn") for c in (1, 32)]
        ):
            cells = []
            for a, b in pairs:
                value, _ = reader.quotient(model, a, b, connections, name)
                if value is not None and name != "rps":
                    value = 1 / value
                cells.append(f"{value:.2f}×" if value is not None else "–")
            rows.append([text] + cells)
        header = ["metric"] + [f"{reader.labels.get(a, a)} vs {reader.labels.get(b, b)}" for a, b in pairs]
        out += [f"### {MODELS[model].title}\n", table(header, rows) + "\n"]
    return "\n".join(out)


def _share(fraction):
    return f"{fraction:.1%}" if fraction < 0.1 else f"{fraction:.0%}"


def ceiling_section(reader):
    """Each column's throughput as a share of onnxruntime alone."""
    batch = reader.data["settings"]["batch_size"]
    out = [
        "## Share of the model-only ceiling\n",
        f"Requests/s of each server ÷ samples/s of onnxruntime alone on the same core, with the same "
        f"threads, running batches of {batch} back to back (and, in brackets, batches of 1).\n",
    ]
    for model in reader.data["settings"]["models"]:
        top = reader.median(model_only_cell(model), MODEL_ONLY, "rps")
        single = reader.median(model_only_cell(model), MODEL_ONLY, "rps_b1")
        rows = []
        for column in reader.data["columns"]:
            cells = []
            for c in (32, 256):
                x = reader.median(load_cell(model, c), column, "rps")
                cells.append(f"{_share(x / top)} ({_share(x / single)})" if x and top and single else "–")
            rows.append([reader.labels[column]] + cells)
        ceiling = (
            f"{fmt(top)} samples/s at batch {batch}, {fmt(single)} at batch 1"
            if top and single
            else "not measured"
        )
        out += [
            f"### {MODELS[model].title}: ceiling {ceiling}\n",
            table(["column", "32 conn", "256 conn"], rows) + "\n",
        ]
    return "\n".join(out)


def answers_section(reader):
    out = [
        "## Answers\n",
        "Before its loads, each server answers the load's request alone, then "
        "8 different requests sent at once; each answer is compared with onnxruntime's answer to "
        "that request run alone. Largest distance over the rounds (max abs difference, or 1 − cosine):\n",
    ]
    rows = []
    for model in reader.data["settings"]["models"]:
        for column in reader.data["columns"]:
            stats = reader.summary.get(answers_cell(model), {}).get(column)
            if stats:
                rows.append(
                    [
                        MODELS[model].title,
                        reader.labels[column],
                        f"{stats['alone']['max']:.3g}",
                        f"{stats['together']['max']:.3g}",
                        f"{MODELS[model].tolerance:g} ({MODELS[model].distance})",
                    ]
                )
    out.append(table(["model", "column", "alone", "8 at once", "tolerance"], rows) + "\n")
    for model in reader.data["settings"]["models"]:
        out.append(f"- {MODELS[model].title} tolerance: {MODELS[model].tolerance_why}.")
    return "\n".join(out) + "\n"


def skipped_section(reader):
    if not reader.skipped:
        return ""
    rows = [[reader.labels.get(c, c), MODELS[m].title, why] for (c, m), why in reader.skipped.items()]
    return "## Skipped\n\n" + table(["column", "model", "why"], rows) + "\n"


def models_section(data):
    s = data["settings"]
    lines = ["## Models and servers\n"]
    for model in s["models"]:
        lines.append(f"- **{MODELS[model].title}**: {MODELS[model].about}.")
    export = data.get("export") or {}
    if export:
        lines.append(
            f"- MiniLM build: {export.get('package')}, exported by torch {export.get('torch')} "
            f"({export.get('fp32_mb', 0):.0f} MB fp32, equal to sentence-transformers within "
            f"{export.get('fp32_vs_sentence_transformers_max_abs', 0):.1g}), quantized by onnxruntime "
            f"{export.get('onnxruntime')} to {export.get('int8_mb', 0):.0f} MB (cosine to fp32 ≥ "
            f"{export.get('int8_vs_fp32_min_cosine', 0):.3f}; inside a batch of other sentences an "
            f"embedding moves by up to {export.get('int8_batched_vs_alone_max_abs', 0):.3f}); "
            f"{export.get('seconds', 0):.0f} s to build."
        )
    versions = data["versions"]
    servers = [
        f"{name} {versions[env][dist]}"
        for name, env, dist in (
            ("lite_serving", "lite", "lite-serving"),
            ("openbayes-serving", "reference", "openbayes-serving"),
            ("LitServe", "litserve", "litserve"),
            ("onnxruntime", "lite", "onnxruntime"),
        )
        if dist in versions.get(env, {})
    ]
    lines += [
        f"- Versions: {', '.join(servers)}.",
        f"- Every server: pinned to CPU {data['machine']['server_cpus']}, onnxruntime with "
        f"{s['threads']} intra-op thread(s) and 1 inter-op thread; batch size {s['batch_size']} for every "
        f"batched column; lite `--max-batch-delay {s['lite_delay_ms']:g}`; LitServe `batch_timeout` "
        f"its default (0) and {s['litserve_timeout_s']:g} s.",
        "",
    ]
    return "\n".join(lines)


def render(data):
    """The whole batching.md, from the results document ``data``."""
    reader = Reader(data)
    s = data["settings"]
    failed = {(x["cell"], x["column"]) for x in data["samples"] if x["error"]}
    columns = data["columns"] + [MODEL_ONLY]
    labels = {**data["labels"], MODEL_ONLY: "model only"}
    out = [
        "# lite_serving batching benchmark\n",
        f"Generated {data['machine']['date']} by `{data['command']}`: {s['rounds']} round(s), "
        f"{s['duration']} s per wrk run, loads at {', '.join(map(str, CONNECTIONS))} connections; "
        f"setting up (venvs, models, answers) took {data.get('setup_s', 0):.0f} s.\n",
        models_section(data),
        goals_section(reader),
        skipped_section(reader),
        ratios_section(reader),
        ceiling_section(reader),
        f"## Absolute numbers: median (min–max) over {s['rounds']} round(s)\n",
        "↑ higher is better, ↓ lower is better.\n",
    ]
    for model in s["models"]:
        metrics = [Metric(**m) for m in data["metrics"] if m["cell"].startswith(f"{model}-")]
        out += [
            f"### {MODELS[model].title}\n",
            absolute_section(reader.summary, failed, columns, metrics, labels),
        ]
    out += [answers_section(reader), notes_section(data), machine_section(data), METHOD]
    return "\n".join(out)


METHOD = """## How it was measured

- `python bench/batching.py` (see `bench/README.md`). Each server runs under `taskset` on one CPU,
  wrk (`-t1 --latency`) on the other; every round starts each server afresh for each model,
  checks its answers, warms it up for a second at 32 connections, then runs wrk at 1, 32 and
  256 connections, and stops it. Servers take turns within a round.
- The request is the same file for every server: `{"inputs": {name: [row]}}`, one row; for
  MiniLM, 16 token ids and their attention mask, tokenized once when the bench was built.
- The model-only ceiling: `servers/batching/model_only.py`, onnxruntime alone in one process on
  the servers' CPU, calling the model back to back on batches of the same rows, for as long as
  a wrk run.
- A wrk run with any non-2xx/3xx response or socket error counts as failed and is left out.
"""
