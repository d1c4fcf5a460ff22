"""Prometheus metrics of one serving process, in the text exposition format.

A few dozen lines do what lite_serving needs (counters, gauges, fixed-bucket
histograms) without prometheus-client, which would add a dependency and
a per-observation lock. Counters are updated by the I/O thread only, except
the predict histogram and error counter, which predict threads update (plain
integer increments under the GIL; a rare lost update would skew a count, never
corrupt it).

With ``--workers N`` one scrape reports the whole server, whichever worker
answers it: the supervisor creates a small shared memory area before it forks
(:class:`SharedFigures`, one row of numbers per worker slot); each worker
copies its figures into its row once a second and when it renders, and the
worker that renders sums the rows. Nothing on the request path touches the
area, and no lock is taken: a row is written by its worker only, and a
scrape may see a worker's figures up to a second old. A worker that replaces
a dead one in the same slot adds its counts to the ones its predecessor left,
so the server's counters never go back.
"""

import bisect
import math

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

    def lines(self, name):
        self.fold()
        out = []
        running = 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {self.total:.6f}")
        out.append(f"{name}_count {self.count}")
        return out

    def figures(self):
        """Bucket counts, sum and count, for :class:`SharedFigures`."""
        return [*self.counts, self.total, self.count]

    def set_figures(self, values):
        n = len(self.counts)
        self.counts = [int(v) for v in values[:n]]
        self.total = values[n]
        self.count = int(values[n + 1])


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
        self.shared = None       # SharedFigures under --workers
        self.row = 0             # this worker's row in it

    def share(self, shared, row):
        """Report into row ``row`` of ``shared`` (a worker of ``--workers``; the supervisor
        cleared the row when it started this worker)."""
        self.shared, self.row = shared, row

    def _histograms(self):
        return (self.request_seconds, self.predict_seconds, self.batch_size,
                self.batch_wait_seconds)

    def figures(self):
        """Every figure as one list of numbers (the layout of a row of SharedFigures)."""
        values = list(self.by_class[1:6])
        for histogram in self._histograms():
            values += histogram.figures()
        return values + [self.predict_errors, self.bytes_in, self.bytes_out,
                         self.predict_timeouts, self.in_flight, self.connections,
                         self.predicts_stuck]

    def set_figures(self, values):
        self.by_class[1:6] = [int(v) for v in values[:5]]
        at = 5
        for histogram in self._histograms():
            n = len(histogram.counts) + 2
            histogram.set_figures(values[at:at + n])
            at += n
        (self.predict_errors, self.bytes_in, self.bytes_out, self.predict_timeouts,
         self.in_flight, self.connections, self.predicts_stuck) = [int(v) for v in values[at:at + 7]]

    def publish(self):
        """Fold the histograms, and under --workers copy this worker's figures into its row
        (once a second, and before rendering)."""
        self.fold()
        if self.shared is not None:
            self.shared.write(self.row, self.figures())

    def fold_some(self):
        """Fold the request histograms once enough values have gathered (every turn of the loop)."""
        for histogram in (self.request_seconds, self.predict_seconds):
            if len(histogram.pending) >= FOLD_AT:
                histogram.fold()

    def fold(self):
        """Sort what the histograms observed into their buckets (once a second)."""
        for histogram in self._histograms():
            histogram.fold()

    def render(self):
        """The exposition text: this process's figures, or the whole server's under --workers."""
        if self.shared is None:
            return self._render()
        self.publish()
        server = Metrics()
        server.batching = self.batching
        server.set_figures(self.shared.total())
        text = server._render()
        per_worker = ["# HELP lite_serving_worker_requests_total Answered requests by worker "
                      "process running now (its record on the supervisor's board).",
                      "# TYPE lite_serving_worker_requests_total counter"]
        for index in range(self.shared.rows - 1):
            row = self.shared.row(index)
            if index == self.row or any(row):
                per_worker.append(f'lite_serving_worker_requests_total{{worker="{index}"}} '
                                  f'{int(sum(row[:5]))}')
        return text + ("\n".join(per_worker) + "\n").encode()

    def _render(self):
        lines = [
            "# HELP lite_serving_requests_total Answered requests by status class.",
            "# TYPE lite_serving_requests_total counter",
        ]
        for cls in range(1, 6):
            lines.append(f'lite_serving_requests_total{{code="{cls}xx"}} {self.by_class[cls]}')
        lines += ["# HELP lite_serving_request_duration_seconds From a complete request to its answer.",
                  "# TYPE lite_serving_request_duration_seconds histogram"]
        lines += self.request_seconds.lines("lite_serving_request_duration_seconds")
        lines += ["# HELP lite_serving_predict_duration_seconds Time spent in predict and encoding.",
                  "# TYPE lite_serving_predict_duration_seconds histogram"]
        lines += self.predict_seconds.lines("lite_serving_predict_duration_seconds")
        if self.batching:
            lines += ["# HELP lite_serving_batch_size Requests answered by one batched model call.",
                      "# TYPE lite_serving_batch_size histogram"]
            lines += self.batch_size.lines("lite_serving_batch_size")
            lines += ["# HELP lite_serving_batch_wait_seconds From a request's arrival to the start "
                      "of its batch.",
                      "# TYPE lite_serving_batch_wait_seconds histogram"]
            lines += self.batch_wait_seconds.lines("lite_serving_batch_wait_seconds")
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
                      f"lite_serving_{name} {value}"]
        return ("\n".join(lines) + "\n").encode()


WIDTH = len(Metrics().figures())
GAUGES = 3    # the last figures (in flight, open connections, stuck predicts) are not summed over time


class SharedFigures:
    """Rows of ``WIDTH`` numbers in memory the supervisor of ``--workers`` shares with its
    workers (an area of its board, see ``heartbeat``): one row per worker record, which only
    that worker writes, and a last row of what workers that have exited counted (the
    supervisor adds a worker's counters there when it reaps it, so that no counter goes
    back). One scrape sums them all: the whole server."""

    def __init__(self, buffer, rows):
        self.rows = rows
        self._values = buffer.cast("d") if buffer.format != "d" else buffer

    def row(self, index):
        """A copy of row ``index``."""
        return list(self._values[index * WIDTH:(index + 1) * WIDTH])

    def write(self, index, values):
        """Row ``index`` := ``values`` (its worker only writes it)."""
        from array import array
        self._values[index * WIDTH:(index + 1) * WIDTH] = array("d", values)

    def retire(self, index):
        """The worker of row ``index`` has exited: its counters join the last row, its row is
        cleared for the next worker (supervisor only)."""
        kept = self.rows - 1
        values = self._values
        for i in range(WIDTH - GAUGES):
            values[kept * WIDTH + i] += values[index * WIDTH + i]
        self.write(index, [0.0] * WIDTH)

    def total(self):
        """The sum of the rows."""
        values, rows = self._values, self.rows
        return [sum(values[row * WIDTH + i] for row in range(rows)) for i in range(WIDTH)]
