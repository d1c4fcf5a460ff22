"""A Flask-compatible ``request`` object, built only for predictors that ask for ``request``.

It answers the parts of Flask's ``Request`` API that predictors use, from the
:class:`~lite_serving.request_view.RequestView`, without Flask or werkzeug.
"""

import io
from http.cookies import SimpleCookie
from urllib.parse import quote

import orjson

from .errors import ServingError
from .multipart import boundary_of, parse_multipart
from .parser import parse_query, unquote_path
from .request_view import MultiDict

_URLENCODED = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"
_FORM_TYPES = (_URLENCODED, _MULTIPART)


def _split_media_type(content_type):
    """``"text/plain; charset=utf-8"`` → ``("text/plain", {"charset": "utf-8"})``."""
    if not content_type:
        return "", {}
    parts = content_type.split(";")
    params = {}
    for part in parts[1:]:
        key, sep, value = part.strip().partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    return parts[0].strip().lower(), params


class Request:
    """Flask's ``request`` API over one received request."""

    __lite_serving_provider__ = "request"

    def __init__(self, view):
        self._view = view
        self._head = view.head
        self._json = _UNSET
        self._form = None
        self._files = None

    # -- the request line ----------------------------------------------
    @property
    def method(self):
        return self._head.method

    @property
    def scheme(self):
        proto = self.headers.get("X-Forwarded-Proto")
        return proto.split(",")[0].strip() if proto else "http"

    @property
    def host(self):
        return self.headers.get("Host", "")

    @property
    def path(self):
        return unquote_path(self._head.path)

    @property
    def query_string(self):
        return self._head.query.encode("latin-1")

    @property
    def full_path(self):
        return f"{quote(self.path)}?{self._head.query}"

    @property
    def root_url(self):
        return f"{self.scheme}://{self.host}/"

    url_root = root_url

    @property
    def base_url(self):
        return f"{self.scheme}://{self.host}{quote(self.path)}"

    @property
    def url(self):
        query = self._head.query
        return self.base_url + (f"?{query}" if query else "")

    @property
    def remote_addr(self):
        peer = self._view.peer
        return peer[0] if isinstance(peer, tuple) else None

    # -- headers ---------------------------------------------------------
    @property
    def headers(self):
        return self._view.headers

    @property
    def args(self):
        return self._view.params

    @property
    def cookies(self):
        jar = SimpleCookie()
        for value in self.headers.getlist("Cookie"):
            try:
                jar.load(value)
            except Exception:  # malformed cookies are skipped, as browsers' servers do
                continue
        return MultiDict((k, m.value) for k, m in jar.items())

    @property
    def user_agent(self):
        return self.headers.get("User-Agent", "")

    @property
    def content_type(self):
        return self._head.content_type

    @property
    def mimetype(self):
        return _split_media_type(self._head.content_type)[0]

    @property
    def mimetype_params(self):
        return _split_media_type(self._head.content_type)[1]

    @property
    def content_length(self):
        length = self._head.content_length
        return length if length >= 0 else (len(self._view.body) if self._head.chunked else None)

    @property
    def content_encoding(self):
        return self.headers.get("Content-Encoding")

    # -- the body --------------------------------------------------------
    def get_data(self, cache=True, as_text=False, parse_form_data=False):
        body = self._view.raw_body()
        if parse_form_data and self.mimetype in _FORM_TYPES:
            self.form  # noqa: B018  (parsing consumes the body, as in Flask)
            body = b""
        return body.decode("utf-8", "replace") if as_text else body

    @property
    def data(self):
        return self.get_data(parse_form_data=True)

    @property
    def stream(self):
        spool = self._view.spool
        if spool is not None:
            spool.seek(0)
            return spool
        return io.BytesIO(self._view.body)

    @property
    def is_json(self):
        mt = self.mimetype
        return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))

    def get_json(self, force=False, silent=False, cache=True):
        if cache and self._json is not _UNSET:
            return self._json
        if not (force or self.is_json):
            if silent:
                return None
            raise ServingError("Did not attempt to load JSON data because the request "
                               "Content-Type was not 'application/json'.", 415)
        try:
            value = orjson.loads(self._view.body)
        except orjson.JSONDecodeError as exc:
            if silent:
                value = None
            else:
                raise ServingError(f"Failed to decode JSON object: {exc}", 400) from None
        if cache:
            self._json = value
        return value

    @property
    def json(self):
        return self.get_json()

    def _load_form(self):
        mimetype = self.mimetype
        self._files = MultiDict()
        if mimetype == _URLENCODED:
            self._form = MultiDict(parse_query(self._view.body.decode("latin-1")))
        elif mimetype == _MULTIPART:
            boundary = boundary_of(self.mimetype_params)
            self._form, self._files = parse_multipart(self._view.body, boundary, self._view.spool)
        else:
            self._form = MultiDict()

    @property
    def form(self):
        if self._form is None:
            self._load_form()
        return self._form

    @property
    def files(self):
        if self._files is None:
            self._load_form()
        return self._files

    @property
    def values(self):
        merged = MultiDict(self.args.items(multi=True))
        for key, value in self.form.items(multi=True):
            merged.add(key, value)
        return merged

    @property
    def environ(self):
        """A WSGI environ describing this request, for libraries that want one."""
        head = self._head
        peer = self._view.peer
        env = {
            "REQUEST_METHOD": head.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": self.path.encode("utf-8").decode("latin-1"),
            "QUERY_STRING": head.query,
            "SERVER_PROTOCOL": f"HTTP/1.{head.version}",
            "REMOTE_ADDR": peer[0] if isinstance(peer, tuple) else "",
            "wsgi.url_scheme": self.scheme,
            "wsgi.input": self.stream,
            "wsgi.errors": None,
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        host = self.host
        env["SERVER_NAME"], _, port = host.partition(":")
        env["SERVER_PORT"] = port or "80"
        for name, value in head.fields:
            if name == "content-type":
                env["CONTENT_TYPE"] = value
            elif name == "content-length":
                env["CONTENT_LENGTH"] = value
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
                env[key] = env[key] + "," + value if key in env else value
        return env

    def __repr__(self):
        return f"<Request {self.url!r} [{self.method}]>"


_UNSET = object()
