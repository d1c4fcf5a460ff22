"""Routes and the predict call: a complete request in, the bytes of its answer out.

The I/O thread answers the cheap routes itself (``GET /``, ``OPTIONS``,
probes, errors); ``POST /`` goes to :meth:`Application.handle_predict`,
which runs on a predict thread (or inline) and returns a finished reply.
Replies are built by :mod:`lite_serving.http.replies`.
"""

import contextvars
import time

from lite_serving.app.metrics import Metrics
from lite_serving.errors import ServingError, describe_exception
from lite_serving.http.replies import bytes_reply, json_reply, refusal, stream_reply
from lite_serving.http.request_ids import RequestSlot, current_request, thread_slot
from lite_serving.predictor.encoder import JSON_TYPE, encode_json, encode_result
from lite_serving.predictor.stream import StreamBody
from lite_serving.process.logs import get_logger
from lite_serving.response import InvalidResponse, cors_allows, set_cors_origins
from lite_serving.server.predict_deadline import STUCK

# current_request.get, bound once: CPython 3.11 compiles ``name.method()`` on a name bound by an
# import as a module attribute load, which for a ContextVar makes a bound method each call
_slot_here = current_request.get
log = get_logger("lite_serving")

ROOT_MESSAGE = encode_json({"message": "lite_serving is working; POST to this address to run predict"})
ALLOWED = b"GET, HEAD, OPTIONS, POST"

def _stream_context(head):
    """A copy of this thread's context whose request slot (its own) holds ``head``."""
    context = contextvars.copy_context()
    context.run(current_request.set, RequestSlot(head))
    return context


class Application:
    """Routing and the predictor's ``predict``; ``caller`` is set once the predictor is built."""

    def __init__(self, config):
        self.config = config
        self.caller = None
        self.async_predict = False  # caller returns a coroutine: run on the asyncio loop thread
        self.predictor = None       # the loader.LoadedPredictor, for /openapi.json and /docs
        self.ready = False
        self.draining = False
        self.production = config.production
        self.dev_page = config.dev_page
        self.v2_model = None     # a v2.model.V2Model when an ONNX model is served on /v2 too
        self.batch_caller = None  # a providers.BatchCaller: POST / goes to predict_batch in batches
        self.v2_batching = False  # /v2 inference requests are run in batches
        self.metrics = Metrics()
        # () → HEALTHY, SATURATED (every predict thread stuck: not ready) or STUCK (so for too
        # long: not alive); set by the server under --predict-timeout (see predict_deadline)
        self.health = None
        set_cors_origins(config.cors_allow_origins)
        self.probes = {
            "/healthz": self._alive, "/v2/health/live": self._alive,
            "/readyz": self._readiness, "/v2/health/ready": self._readiness,
            "/metrics": self._metrics,
        }
        if config.docs:   # answered like the probes, by the I/O thread (auth.py: a key for the first)
            self.probes["/openapi.json"] = self._openapi
            self.probes["/docs"] = self._docs_page
        self._openapi_body = None

    def route(self, view):
        """An immediate reply for the routes the I/O thread answers, or None for predict."""
        head = view.head
        method = head.method
        if head.path != "/":
            probe = self.probes.get(head.path)
            if probe is not None and method in ("GET", "HEAD"):
                return probe(head)
            if head.path.startswith("/v2") and self.v2_model is not None:
                return self._v2_route(view)
            if head.path == "*" and method == "OPTIONS":
                return bytes_reply(200, None, b"", head, extra=b"Allow: %s\r\n" % ALLOWED)
            if probe is not None:
                return refusal(view, 405, f"method {method} is not allowed on {head.path}",
                               b"Allow: GET, HEAD\r\n")
            return refusal(view, 404, f"no route for {head.path}; POST to / to predict")
        if method == "POST":
            if not self.ready:
                return refusal(view, 503, "the predictor is still loading", b"Retry-After: 1\r\n")
            return None
        if method == "GET" or method == "HEAD":
            if not self.ready or self.draining:  # 200 only when POST / would run predict
                return self._unavailable(head)
            return bytes_reply(200, JSON_TYPE, ROOT_MESSAGE, head, send_body=method == "GET")
        if method == "OPTIONS":
            return self._options(head)
        return refusal(view, 405, f"method {method} is not allowed on /", b"Allow: %s\r\n" % ALLOWED)

    def _v2_route(self, view):
        """Open Inference Protocol routes: metadata here, infer on a predict thread (None)."""
        from lite_serving.v2 import routes as v2
        head = view.head
        if head.method == "POST" and v2.is_infer(head.path):
            if not self.ready:
                return json_reply(503, {"error": "the model is still loading"}, head,
                                  extra=b"Retry-After: 1\r\n")
            return None
        status, ctype, body, extra = v2.handle(self.v2_model, head.method, head.path, view.body,
                                               view.headers.get)
        return bytes_reply(status, ctype, body, head, extra=extra, send_body=head.method != "HEAD")

    def _v2_infer(self, view):
        from lite_serving.v2 import routes as v2
        return v2.handle(self.v2_model, "POST", view.head.path, view.body, view.headers.get)

    def _unavailable(self, head):
        body = b'{"error":"the server is shutting down"}' if self.draining else \
            b'{"error":"the predictor is still loading"}'
        return bytes_reply(503, JSON_TYPE, body, head, extra=b"Retry-After: 1\r\n",
                           send_body=head.method == "GET")

    def _alive(self, head):
        if self.health is not None and self.health() == STUCK:
            return bytes_reply(503, JSON_TYPE, b'{"status":"stuck"}', head,
                               send_body=head.method == "GET")
        return bytes_reply(200, JSON_TYPE, b'{"status":"alive"}', head, send_body=head.method == "GET")

    def _readiness(self, head):
        if self.health is not None and self.ready and not self.draining and self.health():
            return bytes_reply(503, JSON_TYPE, b'{"status":"saturated"}', head,
                               send_body=head.method == "GET")
        if self.ready and not self.draining:
            return bytes_reply(200, JSON_TYPE, b'{"status":"ready"}', head, send_body=head.method == "GET")
        state = b"draining" if self.draining else b"loading"
        return bytes_reply(503, JSON_TYPE, b'{"status":"%s"}' % state, head,
                           send_body=head.method == "GET")

    def _metrics(self, head):
        return bytes_reply(200, b"text/plain; version=0.0.4; charset=utf-8", self.metrics.render(),
                           head, send_body=head.method == "GET")

    def _openapi(self, head):
        if not self.ready:
            return self._unavailable(head)
        if self._openapi_body is None:  # once: the predictor does not change
            from lite_serving.app.openapi import document_bytes
            try:
                self._openapi_body = document_bytes(self)
            except Exception as exc:
                log.exception("the OpenAPI description cannot be built")
                return json_reply(500, {"error": "the OpenAPI description cannot be built: "
                                                 + describe_exception(exc)}, head)
        return bytes_reply(200, JSON_TYPE, self._openapi_body, head, send_body=head.method == "GET")

    def _docs_page(self, head):
        from lite_serving.app.docs_page import CONTENT_TYPE, HEADERS, PAGE
        return bytes_reply(200, CONTENT_TYPE, PAGE, head, extra=HEADERS,
                           send_body=head.method == "GET")

    def _options(self, head):
        extra = b"Allow: %s\r\n" % ALLOWED
        if head.origin is not None and cors_allows(head.origin):
            extra += b"Access-Control-Allow-Methods: %s\r\n" % ALLOWED
            for name, value in head.fields:
                if name == "access-control-request-headers":
                    extra += b"Access-Control-Allow-Headers: %s\r\n" % value.encode("latin-1")
                    break
        return bytes_reply(200, None, b"", head, extra=extra)

    def handle_predict(self, view):
        """Run ``predict`` for one request and encode its result into a reply. Never raises.

        Whatever escapes ``predict`` (``SystemExit`` included) becomes this request's 500.
        """
        head = view.head
        began = time.perf_counter()
        slot = _slot_here() or thread_slot()
        slot.head = head   # emit_event in predict finds its request (predict never nests)
        try:
            if head.path != "/":
                status, ctype, body, extra = self._v2_infer(view)
            else:
                status, ctype, body, extra = encode_result(self.caller(view), head.accept)
                if type(body) is StreamBody:
                    body.context = _stream_context(head)
                    return stream_reply(status, ctype, body, head, extra)
            return bytes_reply(status, ctype, body, head, extra=extra)
        except BaseException as exc:
            return self._failure(exc, view)
        finally:
            slot.head = None
            self.metrics.predict_seconds.observe(time.perf_counter() - began)

    def _encode(self, result, head):
        """What predict_batch returned for one request → its reply (exceptions escape)."""
        status, ctype, body, extra = encode_result(result, head.accept)
        if type(body) is StreamBody:
            body.context = _stream_context(head)
            return stream_reply(status, ctype, body, head, extra)
        return bytes_reply(status, ctype, body, head, extra=extra)

    def _failure(self, exc, view, logged=False):
        """The reply to a request whose predict (or the encoding of its result) raised ``exc``.

        ``logged``: the failure was logged already (once for a whole batch).
        """
        head = view.head
        view.reason = _reason(exc)
        if isinstance(exc, ServingError):
            return self._serving_error(exc, head)
        self.metrics.predict_errors += 1
        if isinstance(exc, InvalidResponse):
            log.error("answer to %s %s not sent: %s", head.method, head.target, exc)
            return json_reply(500, {"error": "predict returned a value that cannot be sent"}, head)
        if not logged:
            log.exception("predict raised %s for %s %s", type(exc).__name__, head.method, head.target)
            if self.dev_page:
                from lite_serving.app.dev_page import render_failure
                page = render_failure(exc, view)  # None unless the client is on this machine
                if page is not None:
                    return bytes_reply(500, page.content_type, page.body, head, extra=page.extra)
        if self.production:
            message = "predict failed; the server log has the traceback"
        else:
            message = "predict failed: " + describe_exception(exc)
        return json_reply(500, {"error": message}, head)

    # -- batches (the batch thread) -----------------------------------------------------------

    def batchable(self, view):
        """Whether ``view`` (a request for predict) is answered in batches."""
        if view.head.path == "/":
            return self.batch_caller is not None
        return self.v2_batching

    def batch_arguments(self, view):
        """The arguments of a batchable request, computed as soon as it is complete (I/O
        thread): a body that cannot be decoded raises here, and its client is answered at
        once, without waiting for the model. /v2 inference requests: None (checked in
        their batch)."""
        if view.head.path != "/":
            return None
        return self.batch_caller.arguments(view)

    def refuse_arguments(self, exc, view):
        """The reply to a request whose arguments raised ``exc`` (a 400 for a bad body)."""
        return self._failure(exc, view)

    def answer_batch(self, views, rows):
        """The replies to a batch of requests of one kind (all ``POST /`` or all /v2 inference),
        in order, ``rows`` their :meth:`batch_arguments`. Never raises."""
        if views[0].head.path != "/":
            return self._v2_batch(views)
        n = len(views)
        self.metrics.batch_size.observe(n)
        began = time.perf_counter()
        try:
            results = self.batch_caller.call(rows)
            count = _result_count(results)
            if count != n:
                raise BatchLengthError(f"predict_batch returned {count} results for a batch of "
                                       f"{n} requests; it must return one per request")
        except BaseException as exc:
            if isinstance(exc, BatchLengthError):
                log.error("%s", exc)
            elif not isinstance(exc, ServingError):
                log.exception("predict_batch raised %s for a batch of %d requests",
                              type(exc).__name__, n)
            return [self._failure(exc, view, logged=True) for view in views]
        else:
            return [self._answer_item(result, view) for result, view in zip(results, views)]
        finally:
            self.metrics.predict_seconds.observe(time.perf_counter() - began)

    def _answer_item(self, result, view):
        """One request's reply from its item of predict_batch's results."""
        head = view.head
        try:
            if isinstance(result, ServingError):
                view.reason = _reason(result)
                return self._serving_error(result, head)
            return self._encode(result, head)
        except BaseException as exc:
            return self._failure(exc, view)

    def _v2_batch(self, views):
        """/v2 inference requests: checked one by one, run together where their shapes agree."""
        from lite_serving.v2 import routes as v2
        from lite_serving.v2.model import InferJob
        model = self.v2_model
        replies = [None] * len(views)
        jobs, kept = [], []
        for index, view in enumerate(views):
            out = v2.handle(model, "POST", view.head.path, view.body, view.headers.get, run=False)
            if isinstance(out, InferJob):
                jobs.append(out)
                kept.append(index)
            else:
                replies[index] = bytes_reply(out.status, out.content_type, out.body, view.head,
                                             extra=out.extra)
        if jobs:
            self.metrics.batch_size.observe(len(jobs))
            began = time.perf_counter()
            results = model.run_batch(jobs)
            self.metrics.predict_seconds.observe(time.perf_counter() - began)
            for index, job, result in zip(kept, jobs, results):
                status, ctype, body, extra = v2.infer_reply(model, job, result)
                replies[index] = bytes_reply(status, ctype, body, views[index].head, extra=extra)
        return replies

    def _serving_error(self, exc, head):
        try:
            status = int(exc.status_code)
            if not 200 <= status <= 599:
                raise InvalidResponse(f"ServingError with status {status}; "
                                      "use a final status from 200 to 599")
            return json_reply(status, exc.payload, head)
        except Exception as bad:
            if isinstance(bad, InvalidResponse):
                log.error("answer to %s %s not sent: %s", head.method, head.target, bad)
            else:
                log.exception("ServingError could not be sent as given")
            try:
                message = str(exc.message)
            except Exception:
                message = "predict raised a ServingError that cannot be sent"
            return json_reply(500, {"error": message}, head)


def _reason(exc):
    """A failed request's reason in the access line: a ServingError's message, else the
    exception (its traceback is in the log)."""
    if isinstance(exc, ServingError):
        try:
            return str(exc.message)
        except Exception:
            pass
    return "predict raised " + describe_exception(exc)


class BatchLengthError(Exception):
    """predict_batch returned a number of results other than the batch's."""


def _result_count(results):
    """How many results predict_batch returned: a list, a tuple, or an array along axis 0."""
    if isinstance(results, (list, tuple)):
        return len(results)
    shape = getattr(results, "shape", None)
    if shape:  # numpy and friends: one result per row
        return shape[0]
    raise BatchLengthError(f"predict_batch returned {type(results).__name__}; it must return a "
                           "list, a tuple or an array with one result per request")
