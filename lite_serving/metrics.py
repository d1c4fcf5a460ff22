"""Prometheus metrics of one serving process, in the text exposition format.

A few dozen lines do what lite_serving needs (counters, gauges, fixed-bucket
histograms) without prometheus-client, which would add a dependency and
a per-observation lock. Counters are updated by the I/O thread only, except
the predict histogram and error counter, which predict threads update (plain
integer increments under the GIL; a rare lost update would skew a count, never
corrupt it). With ``--workers N`` each worker reports its own figures with a
``pid`` label; sum them in the query (``sum without (pid) (...)``).
"""

import bisect
import math
import os

DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0, 30.0)
WAIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


FOLD_AT = 256


class Histogram:
    """Cumulative-bucket histogram (seconds by default).

    ``observe(value)`` only appends to a list (a C call, from any thread); the
    values are sorted into the buckets by :meth:`fold`, which the server calls
    once a few hundred have gathered (``FOLD_AT``, checked once per turn of its
    loop), once a second, and before rendering. Observing costs no more than an
    append on the request path, and a fold sorts a few hundred values at most.
    """

    __slots__ = ("bounds", "counts", "total", "count", "pending", "observe")

    def __init__(self, bounds=DURATION_BUCKETS):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0
        self.pending = []
        self.observe = self.pending.append

    def fold(self):
        """Sort the values observed since the last fold into the buckets."""
        pending = self.pending
        n = len(pending)
        if not n:
            return
        values = pending[:n]
        del pending[:n]  # values appended meanwhile (other threads) stay for the next fold
        values.sort()
        counts = self.counts
        below = 0
        for index, bound in enumerate(self.bounds):
            upto = bisect.bisect_right(values, bound)  # values <= bound (Prometheus' "le")
            counts[index] += upto - below
            below = upto
        counts[-1] += n - below
        self.total += math.fsum(values)
        self.count += n

    def lines(self, name, labels):
        self.fold()
        out = []
        running = 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            out.append(f'{name}_bucket{{{labels},le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {self.count}')
        out.append(f"{name}_sum{{{labels}}} {self.total:.6f}")
        out.append(f"{name}_count{{{labels}}} {self.count}")
        return out


class Metrics:
    """The figures one process keeps about itself."""

    def __init__(self):
        self.by_class = [0] * 6          # index: status // 100
        self.request_seconds = Histogram()
        self.predict_seconds = Histogram()
        self.batching = False                              # batch histograms shown when batching
        self.batch_size = Histogram(BATCH_BUCKETS)         # requests per predict_batch / model call
        self.batch_wait_seconds = Histogram(WAIT_BUCKETS)  # from a request's arrival to its batch
        self.predict_errors = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.in_flight = 0
        self.connections = 0
        self.predict_timeouts = 0   # requests answered 504 by --predict-timeout
        self.predicts_stuck = 0     # calls past --predict-timeout that have not returned

    def fold_some(self):
        """Fold the request histograms once enough values have gathered (every turn of the loop)."""
        for histogram in (self.request_seconds, self.predict_seconds):
            if len(histogram.pending) >= FOLD_AT:
                histogram.fold()

    def fold(self):
        """Sort what the histograms observed into their buckets (once a second)."""
        for histogram in (self.request_seconds, self.predict_seconds, self.batch_size,
                          self.batch_wait_seconds):
            histogram.fold()

    def render(self):
        labels = f'pid="{os.getpid()}"'
        lines = [
            "# HELP lite_serving_requests_total Answered requests by status class.",
            "# TYPE lite_serving_requests_total counter",
        ]
        for cls in range(1, 6):
            lines.append(f'lite_serving_requests_total{{{labels},code="{cls}xx"}} {self.by_class[cls]}')
        lines += ["# HELP lite_serving_request_duration_seconds From a complete request to its answer.",
                  "# TYPE lite_serving_request_duration_seconds histogram"]
        lines += self.request_seconds.lines("lite_serving_request_duration_seconds", labels)
        lines += ["# HELP lite_serving_predict_duration_seconds Time spent in predict and encoding.",
                  "# TYPE lite_serving_predict_duration_seconds histogram"]
        lines += self.predict_seconds.lines("lite_serving_predict_duration_seconds", labels)
        if self.batching:
            lines += ["# HELP lite_serving_batch_size Requests answered by one batched model call.",
                      "# TYPE lite_serving_batch_size histogram"]
            lines += self.batch_size.lines("lite_serving_batch_size", labels)
            lines += ["# HELP lite_serving_batch_wait_seconds From a request's arrival to the start "
                      "of its batch.",
                      "# TYPE lite_serving_batch_wait_seconds histogram"]
            lines += self.batch_wait_seconds.lines("lite_serving_batch_wait_seconds", labels)
        for name, kind, value, text in (
            ("predict_errors_total", "counter", self.predict_errors, "predict calls that raised (ServingError excluded)."),
            ("received_bytes_total", "counter", self.bytes_in, "Bytes read from clients."),
            ("sent_bytes_total", "counter", self.bytes_out, "Bytes written to clients."),
            ("requests_in_flight", "gauge", self.in_flight, "Requests received and not yet answered."),
            ("open_connections", "gauge", self.connections, "Open client connections."),
            ("predict_timeouts_total", "counter", self.predict_timeouts,
             "Requests answered 504 because predict ran past --predict-timeout."),
            ("predicts_stuck", "gauge", self.predicts_stuck,
             "Predict calls past --predict-timeout that have not returned (their threads are taken)."),
        ):
            lines += [f"# HELP lite_serving_{name} {text}", f"# TYPE lite_serving_{name} {kind}",
                      f"lite_serving_{name}{{{labels}}} {value}"]
        return ("\n".join(lines) + "\n").encode()
