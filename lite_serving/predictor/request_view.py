"""One received request as the argument providers see it.

A :class:`RequestView` holds the parsed head and the body bytes. Everything
derived from them (header mapping, query multi-dict, decoded body) is computed
on first use and cached, so a predictor that asks only for ``json`` never pays
for a header dict or a query parse.
"""

from lite_serving.http.parser import parse_query, unquote_path

_MISSING = object()


def _converted_one(value, type, default):
    """``value`` passed through ``type``, or ``default`` when it rejects it (werkzeug's rule)."""
    if type is None:
        return value
    try:
        return type(value)
    except (ValueError, TypeError):
        return default


def _converted(values, type):
    """``values`` passed through ``type``; those it rejects are left out (werkzeug's rule)."""
    if type is None:
        return list(values)
    out = []
    for v in values:
        try:
            out.append(type(v))
        except (ValueError, TypeError):
            pass
    return out


class Headers:
    """Case-insensitive view of the request's header fields, in arrival order.

    Like Flask's ``request.headers``: ``get(name, default, type=)``, ``[]``,
    ``in``, ``items()``, ``keys()``, and iteration over ``(Name, value)``
    pairs; a repeated field reads as one value joined by ``,`` (as behind a
    WSGI server), while ``getlist`` gives the separate values.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields):
        # fields: [(lowercase name, value)]
        self._fields = fields

    def getlist(self, name, type=None):
        """Every value of ``name``, in order; converted by ``type`` when given (failures dropped)."""
        key = name.lower()
        return _converted([v for n, v in self._fields if n == key], type)

    def get(self, name, default=None, type=None):
        """The value of ``name`` (repeats joined by ``,``), or ``default``."""
        key = name.lower()
        found = [v for n, v in self._fields if n == key]
        if not found:
            return default
        value = found[0] if len(found) == 1 else ",".join(found)
        return _converted_one(value, type, default)

    def __getitem__(self, name):
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise KeyError(name)
        return value

    def __contains__(self, name):
        if not isinstance(name, str):
            return False
        key = name.lower()
        return any(n == key for n, _ in self._fields)

    def __iter__(self):
        return iter(self.items())

    def __len__(self):
        return len(self._merged())

    def __bool__(self):
        return bool(self._fields)

    def _merged(self):
        """{lowercase name: value}, repeated fields joined by ``,`` as a WSGI server does."""
        merged = {}
        for n, v in self._fields:
            merged[n] = v if n not in merged else merged[n] + "," + v
        return merged

    def items(self):
        """``(Title-Case name, value)`` pairs, one per name (repeats joined by ``,``)."""
        return [(n.title(), v) for n, v in self._merged().items()]

    def keys(self):
        return [n.title() for n in self._merged()]

    def values(self):
        return list(self._merged().values())

    def to_dict(self):
        """A plain ``dict`` (repeats joined by ``,``)."""
        return dict(self.items())

    def __eq__(self, other):
        if isinstance(other, Headers):
            return self._fields == other._fields
        if isinstance(other, dict):
            return self.to_dict() == {k.title(): v for k, v in other.items()}
        return NotImplemented

    def __repr__(self):
        return f"Headers({self.items()!r})"


class MultiDict(dict):
    """A ``dict`` of first values that also remembers every value of a key.

    Behaves like werkzeug's ``MultiDict`` for reading: ``d[key]`` and
    ``d.get(key, default, type=)`` give the first value, ``getlist`` all of
    them; iteration, ``len`` and ``in`` see each key once, in first-seen order.
    Being a ``dict`` of first values, it serializes as one.
    """

    __slots__ = ("_lists",)

    def __init__(self, pairs=()):
        dict.__init__(self)
        lists = {}
        for key, value in pairs:
            if key in lists:
                lists[key].append(value)
            else:
                lists[key] = [value]
                dict.__setitem__(self, key, value)
        self._lists = lists

    def get(self, key, default=None, type=None):
        """First value of ``key`` (converted by ``type``; a failed conversion gives ``default``)."""
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            return default
        return _converted_one(value, type, default)

    def getlist(self, key, type=None):
        """Every value of ``key`` in order (``[]`` when absent)."""
        return _converted(self._lists.get(key, ()), type)

    def lists(self):
        """``(key, [values])`` pairs."""
        return [(k, list(v)) for k, v in self._lists.items()]

    def items(self, multi=False):
        if multi:
            return [(k, v) for k, vs in self._lists.items() for v in vs]
        return list(dict.items(self))

    def to_dict(self, flat=True):
        """``{key: first value}``, or ``{key: [values]}`` with ``flat=False``."""
        if flat:
            return dict(self)
        return {k: list(v) for k, v in self._lists.items()}

    def __setitem__(self, key, value):
        dict.__setitem__(self, key, value)
        self._lists[key] = [value]

    def add(self, key, value):
        """Append one more value to ``key``."""
        if key in self._lists:
            self._lists[key].append(value)
        else:
            self[key] = value

    def __delitem__(self, key):
        dict.__delitem__(self, key)
        del self._lists[key]

    def __repr__(self):
        return f"MultiDict({self.items(multi=True)!r})"


class RequestView:
    """A request after framing: its head, its body, who sent it, and what it holds.

    Everything the request holds (its body buffer or spool file, the files
    its form parts opened, its share of the memory budget) is released by
    :meth:`release`, called once by the connection when the answer has been
    written or the client is gone. Nothing refers back to the view from what
    it holds, so no reference cycle keeps a request alive.
    """

    __slots__ = ("head", "body", "peer", "trailers", "started", "spool", "sink", "reserved",
                 "budget", "resources", "done", "reason", "_headers", "_params")

    def __init__(self, head, body, peer=None, budget=None, reserved=0, started=0.0):
        self.head = head
        self.body = body          # bytes; a memoryview of a growing buffer (large bodies);
        #                           b"" when spooled
        self.spool = None         # a large multipart body, as a file (MultipartSink.content), or None
        self.sink = None          # the MemoryBody/MultipartSink the body was read into, or None
        self.budget = budget      # the MemoryBudget that ``reserved`` bytes are counted in
        self.reserved = reserved
        self.resources = None     # files opened for this request (form parts), closed at release
        self.peer = peer
        self.trailers = None
        self.started = started
        self.done = False         # the connection has ended this request (answered or dropped)
        self.reason = None        # why it was refused or failed, for the access line
        self._headers = None
        self._params = None

    @property
    def method(self):
        return self.head.method

    def raw_body(self):
        """The whole body as bytes (a large body is a memoryview until asked for)."""
        body = self.body
        if type(body) is bytes and self.spool is None:
            return body
        if self.spool is not None:
            self.spool.seek(0)
            body = self.spool.read()
        else:
            body = bytes(body)
        self.body = body
        return body

    def own(self, resource):
        """Close ``resource`` (a file) when this request is released."""
        if self.resources is None:
            self.resources = []
        self.resources.append(resource)

    def release(self):
        """Give back everything this request holds, once; False when it was released before."""
        if self.done:
            return False
        self.done = True
        if self.sink is not None or self.resources is not None:
            self._close_files_and_buffers()
        if self.reserved:
            self.budget.held -= self.reserved
        self.body = b""
        return True

    def _close_files_and_buffers(self):
        resources, self.resources = self.resources, None
        for resource in resources or ():
            try:
                resource.close()
            except Exception:
                pass
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.release(self.body)
        self.spool = None

    @property
    def headers(self):
        """The :class:`Headers` of this request (built on first use)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers(self.head.fields)
        return headers

    @property
    def params(self):
        """The query string as a :class:`MultiDict` (built on first use)."""
        params = self._params
        if params is None:
            params = self._params = MultiDict(parse_query(self.head.query))
        return params

    @property
    def path(self):
        """The percent-decoded path."""
        return unquote_path(self.head.path)
