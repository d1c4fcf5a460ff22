"""What is measured: the load of each scenario and the metrics reported for it.

A *cell* is one measurement kind (e.g. ``echo-c32``); every server gets one sample
per cell and round. Metrics pick one field of a cell's samples for the tables/chart.
"""

from dataclasses import dataclass

ECHO_CONNECTIONS = (1, 32, 256)
MSGPACK_CONNECTIONS = 4
ONNX_CONNECTIONS = 32
WORKERS_CONNECTIONS = 256
WORKER_COUNTS = (1, 2)

# Scenario names accepted by --scenarios, in the order they run.
SCENARIOS = ("echo", "msgpack", "onnx", "facade", "tensor", "tls", "coldstart", "workers")
# Scenarios that are one app served by every server, load after load.
APP_SCENARIOS = ("echo", "msgpack", "onnx", "facade", "tensor", "tls")
TLS_CONNECTIONS = 32
FACADE_CONNECTIONS = 32
TENSOR_CONNECTIONS = 1  # answers of 5-20 MB: one client asking in a loop, no queue at the reference


@dataclass(frozen=True)
class Load:
    """One wrk run against an app: the cell it fills, the connection count, the Accept header."""

    cell: str
    app: str
    connections: int
    title: str
    accept: str = None
    new_connection: bool = False  # Connection: close on every request (a handshake per request)


LOADS = {
    "echo": tuple(Load(f"echo-c{c}", "echo", c, f"echo JSON, {c} conn") for c in ECHO_CONNECTIONS),
    "msgpack": (
        Load("msgpack-4MiB", "msgpack", MSGPACK_CONNECTIONS, f"4 MiB msgpack, {MSGPACK_CONNECTIONS} conn"),
    ),
    "onnx": (
        Load(f"onnx-c{ONNX_CONNECTIONS}", "onnx", ONNX_CONNECTIONS, f"ONNX predict, {ONNX_CONNECTIONS} conn"),
    ),
    # the echo of "echo", but read through request.get_json(): what the Flask facade costs
    "facade": (
        Load(f"facade-c{FACADE_CONNECTIONS}", "facade", FACADE_CONNECTIONS,
             f"echo via request.get_json(), {FACADE_CONNECTIONS} conn"),
    ),
    # a 1M-element float32 array answered: lite returns it as it is, the reference via tolist()
    "tensor": (
        Load("tensor-json", "tensor", TENSOR_CONNECTIONS, f"1M float32 answer, JSON, {TENSOR_CONNECTIONS} conn"),
        Load("tensor-msgpack", "tensor", TENSOR_CONNECTIONS,
             f"1M float32 answer, msgpack, {TENSOR_CONNECTIONS} conn", "application/msgpack"),
    ),
    # the echo over HTTPS: keep-alive, then a new connection (a full TLS handshake) per request
    "tls": (
        Load(f"tls-echo-c{TLS_CONNECTIONS}", "tls", TLS_CONNECTIONS,
             f"echo JSON over TLS, keep-alive, {TLS_CONNECTIONS} conn"),
        Load(f"tls-handshake-c{TLS_CONNECTIONS}", "tls", TLS_CONNECTIONS,
             f"echo JSON over TLS, new connection per request, {TLS_CONNECTIONS} conn",
             new_connection=True),
    ),
}
WORKERS_LOAD = Load(f"workers-c{WORKERS_CONNECTIONS}", "echo", WORKERS_CONNECTIONS, "echo JSON")
COLDSTART_CELL = "coldstart"


def rss_cell(app):
    return f"rss-{app}"


def workers_column(n):
    """Column name of lite with ``--workers n`` in the workers table."""
    return f"lite --workers {n}"


@dataclass(frozen=True)
class Metric:
    """One row of the tables; ``panel``/``tick`` place it in the chart ("" = not charted)."""

    cell: str
    field: str
    label: str
    unit: str
    higher_is_better: bool
    panel: str = ""
    tick: str = ""

    @property
    def key(self):
        return f"{self.cell}.{self.field}"


def _echo_metrics():
    for load in LOADS["echo"]:
        tick = f"{load.connections} conn"
        yield Metric(
            load.cell, "rps", f"{load.title}: throughput", "req/s", True, "Echo JSON throughput (req/s)", tick
        )
        yield Metric(load.cell, "p50_ms", f"{load.title}: p50 latency", "ms", False)
        yield Metric(
            load.cell, "p99_ms", f"{load.title}: p99 latency", "ms", False, "Echo JSON p99 latency (ms)", tick
        )


def _other_metrics():
    (msgpack,) = LOADS["msgpack"]
    (onnx,) = LOADS["onnx"]
    (facade,) = LOADS["facade"]
    yield Metric(
        msgpack.cell, "mb_s", f"{msgpack.title}: ingest", "MB/s", True, "4 MiB MessagePack ingest (MB/s)"
    )
    yield Metric(msgpack.cell, "p50_ms", f"{msgpack.title}: p50 latency", "ms", False)
    yield Metric(onnx.cell, "rps", f"{onnx.title}: throughput", "req/s", True, "ONNX predict (req/s)")
    yield Metric(onnx.cell, "p99_ms", f"{onnx.title}: p99 latency", "ms", False)
    yield Metric(facade.cell, "rps", f"{facade.title}: throughput", "req/s", True)
    for load in LOADS["tensor"]:
        yield Metric(load.cell, "rps", f"{load.title}: throughput", "req/s", True,
                     "1M float32 answer (req/s)", load.cell.split("-")[1])
        yield Metric(load.cell, "p50_ms", f"{load.title}: p50 latency", "ms", False)
    panel = "Echo JSON over TLS (req/s)"
    for load in LOADS["tls"]:
        tick = "new connection per request" if load.new_connection else "keep-alive"
        yield Metric(load.cell, "rps", f"{load.title}: throughput", "req/s", True, panel, tick)
        if not load.new_connection:  # wrk's latency leaves out the connect and the handshake
            yield Metric(load.cell, "p99_ms", f"{load.title}: p99 latency", "ms", False)
    panel = "Cold start (ms)"
    yield Metric(
        COLDSTART_CELL,
        "predict_ms",
        "cold start: spawn to first answered predict",
        "ms",
        False,
        panel,
        "to first predict",
    )
    yield Metric(
        COLDSTART_CELL,
        "cpu_ms",
        "cold start: server CPU time to first answered predict",
        "ms",
        False,
        panel,
        "server CPU",
    )
    for app in APP_SCENARIOS:
        yield Metric(rss_cell(app), "mib", f"RSS after {app} load", "MiB", False, "RSS after load (MiB)", app)


METRICS = (*_echo_metrics(), *_other_metrics())
WORKERS_METRICS = (
    Metric(WORKERS_LOAD.cell, "rps", "throughput", "req/s", True, "--workers scaling, lite (req/s)"),
    Metric(WORKERS_LOAD.cell, "p99_ms", "p99 latency", "ms", False),
    Metric(rss_cell("workers"), "mib", "RSS after load, all processes", "MiB", False),
    Metric(rss_cell("workers"), "processes", "processes", "count", False),
)
