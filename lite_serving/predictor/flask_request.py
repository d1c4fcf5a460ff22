"""A Flask-compatible ``request`` object, built only for predictors that ask for ``request``.

It answers the parts of Flask's ``Request`` API that predictors use, from the
:class:`~lite_serving.predictor.request_view.RequestView`, without Flask or werkzeug.
"""

import codecs
import io
import re
from urllib.parse import quote, unquote_to_bytes

import orjson

from lite_serving.errors import ServingError
from lite_serving.http.multipart import boundary_of, parse_multipart
from lite_serving.http.parser import parse_query, unquote_path
from lite_serving.predictor.request_view import MultiDict
from lite_serving.process import config as _config

_URLENCODED = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"
_FORM_TYPES = (_URLENCODED, _MULTIPART)


class BadRequestKeyError(KeyError, ServingError):
    """A missing key of ``args``/``form``/``files``/``values``/``cookies``: 400, as in Flask."""

    def __init__(self, key):
        KeyError.__init__(self, key)
        ServingError.__init__(self, f"the request has no {key!r}", 400)

    def __str__(self):
        return self.message


class _RequestDict(MultiDict):
    """The facade's multi-dicts: ``d[missing]`` is a 400 (a KeyError too), as in werkzeug."""

    __slots__ = ()

    def __getitem__(self, key):
        try:
            return MultiDict.__getitem__(self, key)
        except KeyError:
            raise BadRequestKeyError(key) from None


class _Values(_RequestDict):
    """``args`` then ``form``, like werkzeug's CombinedMultiDict: ``items(multi=True)`` goes
    through each in turn."""

    __slots__ = ("_parts",)

    def __init__(self, *parts):
        _RequestDict.__init__(self, [pair for part in parts for pair in part.items(multi=True)])
        self._parts = parts

    def items(self, multi=False):
        if multi:
            return [pair for part in self._parts for pair in part.items(multi=True)]
        return _RequestDict.items(self)


# Cookie header pairs: name, then = and a quoted or bare value, up to ";" (werkzeug's reading).
_COOKIE_PAIR = re.compile(r'([^=;]*)(?:\s*=\s*("(?:[^\\"]|\\.)*"|.*?))?\s*;\s*', re.ASCII)
_COOKIE_ESCAPE = re.compile(rb"\\([0-3][0-7]{2}|.)")


def _unescape_cookie(match):
    escaped = match.group(1)
    return escaped if len(escaped) == 1 else bytes((int(escaped, 8),))


def _parse_cookies(text):
    """``a=1; b="x y"; a=2`` → [("a", "1"), ("b", "x y"), ("a", "2")]: every pair, in order."""
    pairs = []
    for name, value in _COOKIE_PAIR.findall(text + ";"):
        name, value = name.strip(), value.strip()
        if not name:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = _COOKIE_ESCAPE.sub(_unescape_cookie, value[1:-1].encode())
            value = value.decode("utf-8", "replace")
        pairs.append((name, value))
    return pairs


def _percent_escape(exc):
    """Codec error handler: bytes that are not UTF-8 stay ``%XX`` escapes."""
    return "".join("%%%02X" % b for b in exc.object[exc.start:exc.end]), exc.end


codecs.register_error("lite_serving.percent", _percent_escape)
# escapes a URL's query keeps when shown as an IRI: controls, space, "%", "&", "=", "+", "#", DEL
_KEEP_QUOTED = re.compile("((?:%(?:" + "|".join(
    "%02X" % c for c in sorted((*range(0x21), 0x25, 0x26, 0x3D, 0x2B, 0x23, 0x7F))) + "))+)", re.I)


def _query_iri(query):
    """The query as Flask shows it in ``request.url``: UTF-8 escapes decoded, the rest kept."""
    quoted = quote(query.encode("latin-1"), safe="!$&'()*+,/:;=?@%")
    pieces = _KEEP_QUOTED.split(quoted)
    for i in range(0, len(pieces), 2):  # odd pieces are the escapes kept as they are
        if "%" in pieces[i]:
            pieces[i] = unquote_to_bytes(pieces[i]).decode("utf-8", "lite_serving.percent")
    return "".join(pieces)


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
        self._json = _UNSET         # get_json() result, and for silent=True (Flask keeps both)
        self._json_silent = _UNSET
        self._data = None           # get_data() result, once asked
        self._stream = None         # one body stream per request, as Flask's
        self._args = None
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
        host = self.headers.get("Host", "")
        default_port = {"http": ":80", "https": ":443"}.get(self.scheme)
        if default_port and host.endswith(default_port):  # Flask leaves out the default port
            host = host[:-len(default_port)]
        return host

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
        return self.base_url + (f"?{_query_iri(query)}" if query else "")

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
        args = self._args
        if args is None:
            args = self._args = _RequestDict(self._view.params.items(multi=True))
        return args

    @property
    def cookies(self):
        return _RequestDict(_parse_cookies(";".join(self.headers.getlist("Cookie"))))

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
        return length if length >= 0 else None  # a chunked body has none, as in Flask

    @property
    def content_encoding(self):
        return self.headers.get("Content-Encoding")

    # -- the body --------------------------------------------------------
    def get_data(self, cache=True, as_text=False, parse_form_data=False):
        body = self._data
        if body is None:
            if parse_form_data and self.mimetype in _FORM_TYPES:
                self.form  # noqa: B018  (parsing consumes the body, as in Flask)
                body = b""
            else:
                body = self._view.raw_body()
            if cache:
                self._data = body
        return body.decode("utf-8", "replace") if as_text else body

    @property
    def data(self):
        return self.get_data(parse_form_data=True)

    @property
    def stream(self):
        """The body as a file, the same one each time (reading it in a loop ends)."""
        stream = self._stream
        if stream is None:
            spool = self._view.spool
            if spool is not None:
                spool.seek(0)
                stream = spool
            else:
                stream = io.BytesIO(self._view.body)
            self._stream = stream
        return stream

    @property
    def is_json(self):
        mt = self.mimetype
        return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))

    def get_json(self, force=False, silent=False, cache=True):
        cached = self._json_silent if silent else self._json
        if cache and cached is not _UNSET:
            return cached
        if not (force or self.is_json):
            if silent:
                return None
            raise ServingError("Did not attempt to load JSON data because the request "
                               "Content-Type was not 'application/json'.", 415)
        try:
            value = orjson.loads(self._view.body)
        except orjson.JSONDecodeError as exc:
            if not silent:
                raise ServingError(f"Failed to decode JSON object: {exc}", 400) from None
            if cache:  # only the silent reading is known: a later get_json() still fails
                self._json_silent = None
            return None
        if cache:
            self._json = self._json_silent = value
        return value

    @property
    def json(self):
        return self.get_json()

    def _load_form(self):
        mimetype = self.mimetype
        self._files = _RequestDict()
        if mimetype == _URLENCODED:
            self._form = _RequestDict(parse_query(self._view.raw_body().decode("latin-1")))
        elif mimetype == _MULTIPART:
            boundary = boundary_of(self.mimetype_params)
            parsed = getattr(self._view.sink, "parts", None)
            if parsed is not None:   # a large upload, parsed as it arrived (MultipartSink)
                form, files = parsed()
            else:
                settings = _config.active
                form, files = parse_multipart(self._view.raw_body(), boundary,
                                              settings.max_form_parts, settings.max_form_field_size)
            for _name, upload in files.items(multi=True):
                self._view.own(upload.stream)  # closed when the request is released
            self._form = _RequestDict(form.items(multi=True))
            self._files = _RequestDict(files.items(multi=True))
        else:
            self._form = _RequestDict()

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
        return _Values(self.args, self.form)

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
