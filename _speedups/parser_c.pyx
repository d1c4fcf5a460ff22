# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled twin of ``lite_serving/http/parser_py.py`` (HTTP/1.1 request framing, RFC 9112).

Same public API, same rules checked in the same order, same ``ParseError``
statuses and messages, same results (types included). The readable
reference is parser_py; every C routine below names the Python code it
mirrors. The work is done on a ``const unsigned char *`` into the caller's
bytes/bytearray, scanned with byte-class tables; Python objects are only
created for the results.

Where the two differ on purpose (not observable through values):
``RequestHead.fields`` is computed on first access (from the header bytes,
kept for that), short strings that repeat from request to request (methods,
targets, Content-Type...) are shared instead of rebuilt, and the chunked
body is accumulated in one growing buffer instead of a list of parts.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from libc.stdint cimport uint64_t
from libc.math cimport floor
from libc.string cimport memchr, memcmp, memcpy, strlen

from lite_serving.http.limits import (MAX_CHUNK_LINE, MAX_HEAD, MAX_HEADERS, MAX_TARGET,
                                      QUERY_ERRORS, TLS_ON_PLAIN_PORT, ParseError)

cdef extern from "Python.h":
    bint PyBytes_CheckExact(object o)
    bint PyByteArray_CheckExact(object o)
    char* PyByteArray_AS_STRING(object o)
    Py_ssize_t PyByteArray_GET_SIZE(object o)
    bint PyLong_CheckExact(object o)
    bint PyFloat_CheckExact(object o)
    Py_ssize_t PyLong_AsSsize_t(object o)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    const Py_ssize_t PY_SSIZE_T_MAX
    bint PyUnicode_CheckExact(object o)
    int PyUnicode_KIND(object o)
    int PyUnicode_1BYTE_KIND
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    unsigned char* PyUnicode_1BYTE_DATA(object o)
    bint PyUnicode_IS_ASCII(object o)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    object PyUnicode_DecodeLatin1(const char* s, Py_ssize_t size, const char* errors)
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)

cdef extern from "Python.h":
    char* _bytes_data "PyBytes_AS_STRING" (PyObject* o)
    int _PyBytes_Resize(PyObject** o, Py_ssize_t size) except -1

cdef extern from "string.h":
    # declared by glibc when _GNU_SOURCE is set, which pyconfig.h does
    void* memmem(const void* hay, size_t haylen, const void* needle, size_t needlelen) nogil

__all__ = [
    "ParseError", "RequestHead", "ChunkedDecoder", "parse_head", "parse_query", "unquote_path",
    "MAX_HEAD", "MAX_HEADERS", "MAX_TARGET", "MAX_CHUNK_LINE",
]

cdef object _pure_module = None


cdef object _py():
    """parser_py, imported the first time a rare input needs its rules (it imports ``re``)."""
    global _pure_module
    if _pure_module is None:
        from lite_serving.http import parser_py
        _pure_module = parser_py
    return _pure_module

cdef Py_ssize_t _MAX_CHUNK_LINE = MAX_CHUNK_LINE
# limits above this go to parser_py: sums of two of them and a position stay in Py_ssize_t
# (2**61 - 1 on 64-bit platforms, 2**29 - 1 on 32-bit ones)
cdef Py_ssize_t _BIG = PY_SSIZE_T_MAX >> 2
# ChunkedDecoder's limits past this are held at it: no buffer comes near, so it answers as with
# the exact value, and a position plus or minus one of them stays in a long long
cdef long long _LIMIT_CAP = (<long long>1) << 62

# ---------------------------------------------------------------- byte classes

cdef unsigned char TCHAR[256]      # RFC 9110 §5.6.2 tchar
cdef unsigned char FIELD_OK[256]   # field-value bytes: HTAB, SP, VCHAR, obs-text
cdef unsigned char TARGET_OK[256]  # request-target bytes: VCHAR (0x21-0x7E)
cdef unsigned char HEXVAL[256]     # hex digit value + 1, 0 when not a hex digit
cdef unsigned char LOWER[256]      # bytes.lower(): ASCII letters only


cdef void _init_tables():
    cdef int c
    cdef bytes tchars = (b"!#$%&'*+-.^_`|~0123456789"
                         b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    for c in range(256):
        TCHAR[c] = 0
        FIELD_OK[c] = 1 if (c == 0x09 or (0x20 <= c and c != 0x7F)) else 0
        TARGET_OK[c] = 1 if 0x21 <= c <= 0x7E else 0
        HEXVAL[c] = 0
        LOWER[c] = c + 32 if 0x41 <= c <= 0x5A else c
    for c in tchars:
        TCHAR[c] = 1
    for c in range(10):
        HEXVAL[0x30 + c] = c + 1
    for c in range(6):
        HEXVAL[0x41 + c] = c + 11
        HEXVAL[0x61 + c] = c + 11


_init_tables()

# ---------------------------------------------------------------- small helpers

cdef inline Py_ssize_t _find_crlf(const unsigned char* s, Py_ssize_t pos, Py_ssize_t lim) noexcept:
    """``buf.find(b"\\r\\n", pos, lim)`` with 0 <= pos, lim <= len(buf)."""
    cdef const unsigned char* p
    while pos + 1 < lim:
        p = <const unsigned char*>memchr(s + pos, 0x0D, lim - 1 - pos)
        if p == NULL:
            return -1
        pos = p - s
        if s[pos + 1] == 0x0A:
            return pos
        pos += 1
    return -1


cdef inline bint _ieq(const unsigned char* p, const char* lit, Py_ssize_t n) noexcept:
    """``p[:n].lower() == lit`` for a lowercase literal made of letters, digits,
    "-", ":" and "/", where p holds tchar or field-value bytes: for those,
    ``c | 0x20 == l`` holds only when c is l or its uppercase letter (the other
    byte with that image, l - 0x20, is a control byte or absent)."""
    cdef uint64_t x, y
    while n >= 8:
        memcpy(&x, p, 8)
        memcpy(&y, lit, 8)
        if (x | 0x2020202020202020ULL) != y:
            return False
        p += 8
        lit += 8
        n -= 8
    while n > 0:
        if (p[0] | 0x20) != <unsigned char>lit[0]:
            return False
        p += 1
        lit += 1
        n -= 1
    return True


cdef inline bint _same(const unsigned char* a, const unsigned char* b, Py_ssize_t n) noexcept:
    """``a[:n] == b[:n]``, eight bytes at a time (short strings: no memcmp call)."""
    cdef uint64_t x, y
    while n >= 8:
        memcpy(&x, a, 8)
        memcpy(&y, b, 8)
        if x != y:
            return False
        a += 8
        b += 8
        n -= 8
    while n > 0:
        if a[0] != b[0]:
            return False
        a += 1
        b += 1
        n -= 1
    return True


cdef inline Py_ssize_t _scan_value(const unsigned char* s, Py_ssize_t p, Py_ssize_t size) noexcept:
    """Index of the first byte at or after p that cannot be in a field value.

    Eight bytes at a time while they are all plain (0x20-0x7E or obs-text),
    then byte by byte; relies on the NUL that follows bytes/bytearray data.
    """
    cdef uint64_t x, y
    while p + 8 <= size:
        memcpy(&x, s + p, 8)
        y = x ^ 0x7F7F7F7F7F7F7F7FULL
        # any byte < 0x20 (obs-text excluded by ~x), any byte == 0x7F
        if (((x - 0x2020202020202020ULL) & ~x) | ((y - 0x0101010101010101ULL) & ~y)) \
                & 0x8080808080808080ULL:
            break
        p += 8
    while FIELD_OK[s[p]]:
        p += 1
    return p


cdef inline object _ascii(const unsigned char* p, Py_ssize_t n):
    """Text of bytes known to be ASCII (what latin-1 decoding gives for them)."""
    cdef object u = PyUnicode_New(n, 127)
    if n:
        memcpy(PyUnicode_1BYTE_DATA(u), p, n)
    return u


cdef inline object _latin1(const unsigned char* p, Py_ssize_t n):
    return PyUnicode_DecodeLatin1(<const char*>p, n, NULL)


@cython.final
@cython.internal
cdef class _StrCache:
    """One remembered (bytes → latin-1 text) pair: headers repeat between requests."""
    cdef unsigned char buf[64]
    cdef Py_ssize_t n
    cdef object text

    def __cinit__(self):
        self.n = -1

    cdef inline object get(self, const unsigned char* p, Py_ssize_t n):
        if n == self.n and _same(self.buf, p, n):
            return self.text
        text = _latin1(p, n)
        if n <= 64:
            memcpy(self.buf, p, n)
            self.n = n
            self.text = text
        return text


cdef _StrCache _target_cache = _StrCache()
cdef _StrCache _path_cache = _StrCache()
cdef _StrCache _ctype_cache = _StrCache()
cdef _StrCache _accept_cache = _StrCache()
cdef _StrCache _origin_cache = _StrCache()
cdef _StrCache _agent_cache = _StrCache()

cdef str _S_GET = "GET"
cdef str _S_POST = "POST"
cdef str _S_PUT = "PUT"
cdef str _S_HEAD = "HEAD"
cdef str _S_PATCH = "PATCH"
cdef str _S_DELETE = "DELETE"
cdef str _S_OPTIONS = "OPTIONS"
cdef str _S_SLASH = "/"
cdef str _S_STAR = "*"
cdef str _S_EMPTY = ""


cdef inline object _method_text(const unsigned char* p, Py_ssize_t n):
    if n == 3:
        if p[0] == c'G' and p[1] == c'E' and p[2] == c'T':
            return _S_GET
        if p[0] == c'P' and p[1] == c'U' and p[2] == c'T':
            return _S_PUT
    elif n == 4:
        if p[0] == c'P' and p[1] == c'O' and p[2] == c'S' and p[3] == c'T':
            return _S_POST
        if p[0] == c'H' and p[1] == c'E' and p[2] == c'A' and p[3] == c'D':
            return _S_HEAD
    elif n == 5 and _same(p, <const unsigned char*>b"PATCH", 5):
        return _S_PATCH
    elif n == 6 and _same(p, <const unsigned char*>b"DELETE", 6):
        return _S_DELETE
    elif n == 7 and _same(p, <const unsigned char*>b"OPTIONS", 7):
        return _S_OPTIONS
    return _ascii(p, n)


cdef inline object _path_text(const unsigned char* p, Py_ssize_t n):
    if n == 1 and p[0] == 0x2F:
        return _S_SLASH
    return _path_cache.get(p, n)


# ---------------------------------------------------------------- field lines

cdef int _raise(int status, msg) except -1:
    raise ParseError(status, msg)




cdef int _refuse_partial(const unsigned char* s, Py_ssize_t start, Py_ssize_t size) except -1:
    """parser_py._refuse_partial: an incomplete head that can never begin a valid request."""
    cdef Py_ssize_t i, p
    cdef const unsigned char* q
    if start >= size:
        return 0
    if s[start] == 0x16:
        _raise(400, TLS_ON_PLAIN_PORT)
    i = start
    while i < size:
        q = <const unsigned char*>memchr(s + i, 0x0A, size - i)
        if q == NULL:
            break
        i = q - s
        if i == start or s[i - 1] != 0x0D:
            _raise(400, "bare LF in request head; lines must end with CRLF")
        i += 1
    p = start
    while p < size and TCHAR[s[p]]:
        p += 1
    if p < size and s[p] != 0x20 and not (p == start and p == size - 1 and s[p] == 0x0D):
        _raise(400, "invalid method")
    return 0


cdef int _split_field_check(const unsigned char* s, Py_ssize_t ls, Py_ssize_t le) except -1:
    """parser_py._split_field's checks on a non-empty line s[ls:le] without CR/LF."""
    cdef const unsigned char* c
    cdef Py_ssize_t i
    if s[ls] == 0x20 or s[ls] == 0x09:
        _raise(400, "obsolete line folding is not allowed")
    c = <const unsigned char*>memchr(s + ls, 0x3A, le - ls)
    if c == NULL or c == s + ls:
        _raise(400, "header field without a name or colon")
    for i in range(ls, c - s):
        if not TCHAR[s[i]]:
            _raise(400, "invalid header field name")
    for i in range(c - s + 1, le):
        if not FIELD_OK[s[i]]:
            _raise(400, "invalid character in header field value")
    return 0


cdef inline bint _has_cr_or_lf(const unsigned char* s, Py_ssize_t ls, Py_ssize_t le) noexcept:
    return (memchr(s + ls, 0x0D, le - ls) != NULL) or (memchr(s + ls, 0x0A, le - ls) != NULL)


cdef int _header_error(const unsigned char* s, Py_ssize_t hs, Py_ssize_t he, Py_ssize_t max_headers,
                       int status, msg) except -1:
    """Raise an error found in a header line, unless parser_py would have refused
    the number of header lines first (it counts them before looking at any)."""
    cdef Py_ssize_t n = 0, p = hs
    while p < he:
        p = _find_crlf(s, p, he)
        if p < 0:
            break
        n += 1
        p += 2
    if n > max_headers:
        _raise(431, "too many header fields")
    _raise(status, msg)


cdef int _bad_header_line(const unsigned char* s, Py_ssize_t ls, Py_ssize_t hs, Py_ssize_t he,
                          Py_ssize_t max_headers) except -1:
    """The line at ``ls`` failed the fast scan: raise parser_py's error for it."""
    cdef Py_ssize_t le = _find_crlf(s, ls, he)
    if _has_cr_or_lf(s, ls, le):
        _header_error(s, hs, he, max_headers, 400, "bare CR or LF in request head")
    try:
        _split_field_check(s, ls, le)
    except ParseError as exc:
        _header_error(s, hs, he, max_headers, exc.status, exc.message)
    raise AssertionError("parser_c: a header line failed the fast scan but no rule")


cdef inline void _strip(const unsigned char* s, Py_ssize_t* vs, Py_ssize_t* ve) noexcept:
    """``value.strip(b" \\t")`` on s[vs:ve]."""
    cdef Py_ssize_t a = vs[0], b = ve[0]
    while a < b and (s[a] == 0x20 or s[a] == 0x09):
        a += 1
    while b > a and (s[b - 1] == 0x20 or s[b - 1] == 0x09):
        b -= 1
    vs[0] = a
    ve[0] = b


# lowercase names seen in most requests: _build_fields shares these str objects
cdef tuple _KNOWN_NAMES = (
    "host", "user-agent", "accept", "accept-encoding", "accept-language", "connection",
    "content-type", "content-length", "transfer-encoding", "expect", "origin", "referer",
    "cookie", "authorization", "cache-control", "pragma", "upgrade", "te", "x-forwarded-for",
    "x-forwarded-proto", "x-real-ip", "x-request-id", "x-openbayes-serving-request-id",
    "access-control-request-method", "access-control-request-headers", "sec-fetch-mode",
    "sec-fetch-site", "sec-fetch-dest", "if-none-match", "if-modified-since", "dnt", "priority",
)
cdef bytes _KNOWN_BYTES = "".join(_KNOWN_NAMES).encode("ascii")
cdef Py_ssize_t _KNOWN_COUNT = len(_KNOWN_NAMES)
cdef Py_ssize_t _KNOWN_OFF[40]
cdef Py_ssize_t _KNOWN_LEN[40]


cdef void _init_known():
    cdef Py_ssize_t i, off = 0
    for i in range(_KNOWN_COUNT):
        _KNOWN_OFF[i] = off
        _KNOWN_LEN[i] = len(_KNOWN_NAMES[i])
        off += _KNOWN_LEN[i]


_init_known()


cdef inline object _field_name(const unsigned char* p, Py_ssize_t n):
    """``p[:n].lower()`` as text, p holding tchar bytes (validated)."""
    cdef Py_ssize_t i
    cdef const char* known = PyBytes_AS_STRING(_KNOWN_BYTES)
    cdef unsigned char* d
    for i in range(_KNOWN_COUNT):
        if _KNOWN_LEN[i] == n and _ieq(p, known + _KNOWN_OFF[i], n):
            return _KNOWN_NAMES[i]
    name = PyUnicode_New(n, 127)
    d = PyUnicode_1BYTE_DATA(name)
    for i in range(n):
        d[i] = LOWER[p[i]]
    return name


cdef enum:
    _LC_SLOTS = 64     # field lines remembered (direct-mapped)
    _LC_KEY = 64       # longest line remembered


@cython.final
@cython.internal
cdef class _LineCache:
    """Raw field line → its (name, value) tuple. Clients repeat the same lines
    request after request; tuples of str are immutable, so sharing is safe."""
    cdef unsigned char keys[_LC_SLOTS * _LC_KEY]
    cdef Py_ssize_t lens[_LC_SLOTS]
    cdef list items

    def __cinit__(self):
        cdef Py_ssize_t i
        self.items = [None] * _LC_SLOTS
        for i in range(_LC_SLOTS):
            self.lens[i] = -1

    cdef inline object get(self, const unsigned char* s, Py_ssize_t ls, Py_ssize_t colon,
                           Py_ssize_t vs, Py_ssize_t ve, Py_ssize_t le):
        cdef Py_ssize_t n = le - ls, h
        cdef uint64_t a = 0, b = 0
        if n > _LC_KEY:
            return (_field_name(s + ls, colon - ls), _latin1(s + vs, ve - vs))
        if n >= 8:
            memcpy(&a, s + ls, 8)
            memcpy(&b, s + le - 8, 8)
        else:
            memcpy(&a, s + ls, n)
        h = <Py_ssize_t>((((a * 0x9E3779B97F4A7C15ULL) ^ b ^ <uint64_t>n) * 0xC2B2AE3D27D4EB4FULL) >> 58)
        if self.lens[h] == n and _same(self.keys + h * _LC_KEY, s + ls, n):
            return self.items[h]
        item = (_field_name(s + ls, colon - ls), _latin1(s + vs, ve - vs))
        memcpy(self.keys + h * _LC_KEY, s + ls, n)
        self.lens[h] = n
        self.items[h] = item
        return item


cdef _LineCache _line_cache = _LineCache()


cdef object _build_fields(const unsigned char* s, Py_ssize_t p, Py_ssize_t he):
    """``fields`` of an already validated header block s[p:he] (each line ends in CRLF)."""
    cdef list fields = []
    cdef Py_ssize_t colon, le, vs, ve
    while p < he:
        colon = <const unsigned char*>memchr(s + p, 0x3A, he - p) - s
        le = <const unsigned char*>memchr(s + colon, 0x0D, he - colon) - s
        vs = colon + 1
        ve = le
        _strip(s, &vs, &ve)
        fields.append(_line_cache.get(s, p, colon, vs, ve, le))
        p = le + 2
    return fields


# ---------------------------------------------------------------- the fields the server needs

cdef struct Lifted:
    long long content_length     # -1: none
    Py_ssize_t hosts
    bint te_seen, te_invalid, te_last_chunked
    Py_ssize_t te_codings, te_chunked
    bint conn_close, conn_keep, expect_seen, expect_ok
    Py_ssize_t ct_s, ct_e        # first Content-Type value (ct_s -1: none)
    Py_ssize_t acc_s, acc_e, acc_n   # first Accept value, number of Accept fields
    Py_ssize_t org_s, org_e      # last Origin value (org_s -1: none)
    Py_ssize_t rid_s, rid_e      # first X-Request-Id value (rid_s -1: none)
    Py_ssize_t pid_s, pid_e      # first X-Openbayes-Serving-Request-Id value (pid_s -1: none)
    Py_ssize_t ua_s, ua_e        # first User-Agent value (ua_s -1: none)


cdef inline void _lifted_init(Lifted* f) noexcept:
    f.content_length = -1
    f.hosts = 0
    f.te_seen = f.te_invalid = f.te_last_chunked = False
    f.te_codings = f.te_chunked = 0
    f.conn_close = f.conn_keep = f.expect_seen = f.expect_ok = False
    f.ct_s = f.ct_e = -1
    f.acc_s = f.acc_e = -1
    f.acc_n = 0
    f.org_s = f.org_e = -1
    f.rid_s = f.rid_e = f.pid_s = f.pid_e = f.ua_s = f.ua_e = -1


cdef inline void _keep_first(Py_ssize_t* start, Py_ssize_t* end, Py_ssize_t vs,
                             Py_ssize_t ve) noexcept:
    """Record the value s[vs:ve] of a field whose first occurrence counts (start -1: none yet)."""
    if start[0] < 0:
        start[0] = vs
        end[0] = ve


cdef inline int _lift(Lifted* f, const unsigned char* s, Py_ssize_t ls, Py_ssize_t n,
                      Py_ssize_t vs, Py_ssize_t ve) noexcept:
    """parser_py.parse_head's per-field bookkeeping for one valid field line
    (name s[ls:ls+n], stripped value s[vs:ve]). Returns 0, or 1 for a duplicate
    and 2 for an invalid Content-Length."""
    cdef const unsigned char* q = s + ls
    cdef long long v
    cdef Py_ssize_t i
    if n == 4:
        if _ieq(q, b"host", 4):
            f.hosts += 1
    elif n == 6:
        if _ieq(q, b"accept", 6):
            f.acc_n += 1
            if f.acc_n == 1:
                f.acc_s = vs
                f.acc_e = ve
        elif _ieq(q, b"expect", 6):
            f.expect_seen = True
            f.expect_ok = ve - vs == 12 and _ieq(s + vs, b"100-continue", 12)
        elif _ieq(q, b"origin", 6):
            f.org_s = vs
            f.org_e = ve
    elif n == 10:
        if _ieq(q, b"connection", 10):
            _connection_tokens(f, s, vs, ve)
        elif _ieq(q, b"user-agent", 10):
            _keep_first(&f.ua_s, &f.ua_e, vs, ve)
    elif n == 12:
        if _ieq(q, b"content-type", 12):
            _keep_first(&f.ct_s, &f.ct_e, vs, ve)
        elif _ieq(q, b"x-request-id", 12):
            _keep_first(&f.rid_s, &f.rid_e, vs, ve)
    elif n == 30:
        if _ieq(q, b"x-openbayes-serving-request-id", 30):
            _keep_first(&f.pid_s, &f.pid_e, vs, ve)
    elif n == 14:
        if _ieq(q, b"content-length", 14):
            if f.content_length >= 0:
                return 1
            if ve == vs or ve - vs > 18:
                return 2
            v = 0
            for i in range(vs, ve):
                if s[i] < 0x30 or s[i] > 0x39:
                    return 2
                v = v * 10 + (s[i] - 0x30)
            f.content_length = v
    elif n == 17:
        if _ieq(q, b"transfer-encoding", 17):
            f.te_seen = True
            _transfer_codings(f, s, vs, ve)
    return 0


cdef inline void _connection_tokens(Lifted* f, const unsigned char* s, Py_ssize_t vs,
                                    Py_ssize_t ve) noexcept:
    """Connection tokens: split on ",", strip SP/HTAB, compare lowercased."""
    cdef Py_ssize_t a = vs, b, x, y
    while a <= ve:
        b = a
        while b < ve and s[b] != 0x2C:
            b += 1
        x = a
        y = b
        _strip(s, &x, &y)
        if y - x == 5 and _ieq(s + x, b"close", 5):
            f.conn_close = True
        elif y - x == 10 and _ieq(s + x, b"keep-alive", 10):
            f.conn_keep = True
        a = b + 1


cdef inline void _transfer_codings(Lifted* f, const unsigned char* s, Py_ssize_t vs,
                                   Py_ssize_t ve) noexcept:
    """parser_py._transfer_codings, one field value at a time (errors raised later)."""
    cdef Py_ssize_t a = vs, b, x, y, i
    while a <= ve and not f.te_invalid:
        b = a
        while b < ve and s[b] != 0x2C:
            b += 1
        x = a
        y = b
        a = b + 1
        _strip(s, &x, &y)
        if x == y:
            continue
        for i in range(x, y):
            if not TCHAR[s[i]]:
                f.te_invalid = True
                break
        if f.te_invalid:
            break
        f.te_codings += 1
        if y - x == 7 and _ieq(s + x, b"chunked", 7):
            f.te_chunked += 1
            f.te_last_chunked = True
        else:
            f.te_last_chunked = False


cdef object _all_accept(const unsigned char* s, Py_ssize_t p, Py_ssize_t he):
    """Several Accept fields: their values joined with "," (rare: rescan the block)."""
    cdef Py_ssize_t colon, le, vs, ve
    values = []
    while p < he:
        colon = <const unsigned char*>memchr(s + p, 0x3A, he - p) - s
        le = <const unsigned char*>memchr(s + colon, 0x0D, he - colon) - s
        if colon - p == 6 and _ieq(s + p, b"accept", 6):
            vs = colon + 1
            ve = le
            _strip(s, &vs, &ve)
            values.append(_latin1(s + vs, ve - vs))
        p = le + 2
    return ",".join(values)


# ---------------------------------------------------------------- RequestHead

@cython.freelist(32)
@cython.auto_pickle(False)
cdef class RequestHead:
    """The parsed request line and header section of one request (see parser_py).

    ``fields`` is built on first access from the header bytes kept for that.
    """

    cdef public object method, target, path, query
    cdef public int version
    cdef public Py_ssize_t end
    cdef public long long content_length
    cdef public bint chunked, keep_alive, expect_continue
    cdef public object content_type, accept, origin, request_id, user_agent
    cdef object _fields
    cdef object _src          # bytes holding the header block, until fields is built
    cdef Py_ssize_t _hs, _he  # the header block in _src: lines, each ending in CRLF

    @property
    def fields(self):
        cdef object src = self._src
        if src is not None:
            self._fields = _build_fields(<const unsigned char*>PyBytes_AS_STRING(src),
                                         self._hs, self._he)
            self._src = None
        return self._fields

    @fields.setter
    def fields(self, value):
        self._src = None
        self._fields = value

    def __repr__(self):
        return (f"<RequestHead {_text_field(<PyObject*>self.method)} "
                f"{_text_field(<PyObject*>self.target)} HTTP/1.{self.version}>")

    def __delattr__(self, name):
        raise AttributeError(f"a request head's {name!r} cannot be deleted")

    def __reduce__(self):
        # (not Cython's own pickling, which reads the text fields as they are, NULL included)
        return _head_from_state, ((
            _text_field(<PyObject*>self.method), _text_field(<PyObject*>self.target),
            _text_field(<PyObject*>self.path), _text_field(<PyObject*>self.query),
            self.version, self.end, self.content_length, self.chunked, self.keep_alive,
            self.expect_continue, _text_field(<PyObject*>self.content_type),
            _text_field(<PyObject*>self.accept), _text_field(<PyObject*>self.origin),
            _text_field(<PyObject*>self.request_id), _text_field(<PyObject*>self.user_agent),
            self.fields),)


def _head_from_state(tuple state):
    """A RequestHead from what its ``__reduce__`` gives (copy and pickle)."""
    cdef RequestHead head = RequestHead.__new__(RequestHead)
    (head.method, head.target, head.path, head.query, head.version, head.end,
     head.content_length, head.chunked, head.keep_alive, head.expect_continue, head.content_type,
     head.accept, head.origin, head.request_id, head.user_agent, head.fields) = state
    return head


cdef inline object _text_field(PyObject* value):
    """A text field of a head as C code here reads it: None where it is unset (NULL), which
    only the member descriptor's own ``__delete__`` can make, past RequestHead.__delattr__."""
    return None if value == NULL else <object>value


# The text fields of RequestHead as member descriptors (T_OBJECT_EX), in place of the getset
# descriptors Cython makes for ``cdef public object``: CPython specializes an attribute load
# from a member descriptor to a read at an offset (LOAD_ATTR_SLOT), while a getset descriptor
# takes the generic lookup and a call each time, about 100 instructions; these fields are read
# a dozen times a request by the server's Python code. Same values, same assignment; deletion
# is refused by __delattr__; the C code here reads them through _text_field, which takes the NULL
# that the descriptor's own __delete__ can still leave for None.
cdef extern from *:
    """
    #include <stddef.h>
    #include "structmember.h"
    #define LS_HEAD_OFFSET(field) \
        offsetof(struct __pyx_obj_12lite_serving_4http_8parser_c_RequestHead, field)
    """
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
        int flags
        const char* doc
    ctypedef struct _TypeDict "PyTypeObject":
        PyObject* tp_dict
    int T_OBJECT_EX
    object PyDescr_NewMember(type owner, PyMemberDef* member)
    void PyType_Modified(type owner)
    int PyDict_SetItemString(PyObject* d, const char* key, object value) except -1
    Py_ssize_t _OFF_METHOD "LS_HEAD_OFFSET(method)"
    Py_ssize_t _OFF_TARGET "LS_HEAD_OFFSET(target)"
    Py_ssize_t _OFF_PATH "LS_HEAD_OFFSET(path)"
    Py_ssize_t _OFF_QUERY "LS_HEAD_OFFSET(query)"
    Py_ssize_t _OFF_CONTENT_TYPE "LS_HEAD_OFFSET(content_type)"
    Py_ssize_t _OFF_ACCEPT "LS_HEAD_OFFSET(accept)"
    Py_ssize_t _OFF_ORIGIN "LS_HEAD_OFFSET(origin)"
    Py_ssize_t _OFF_REQUEST_ID "LS_HEAD_OFFSET(request_id)"
    Py_ssize_t _OFF_USER_AGENT "LS_HEAD_OFFSET(user_agent)"

cdef PyMemberDef _HEAD_MEMBERS[9]   # static: a member descriptor points into it for good


cdef void _head_member(int i, const char* name, Py_ssize_t offset) except *:
    _HEAD_MEMBERS[i].name = name
    _HEAD_MEMBERS[i].type = T_OBJECT_EX
    _HEAD_MEMBERS[i].offset = offset
    _HEAD_MEMBERS[i].flags = 0
    _HEAD_MEMBERS[i].doc = NULL
    PyDict_SetItemString((<_TypeDict*>RequestHead).tp_dict, name,
                         PyDescr_NewMember(RequestHead, &_HEAD_MEMBERS[i]))


_head_member(0, "method", _OFF_METHOD)
_head_member(1, "target", _OFF_TARGET)
_head_member(2, "path", _OFF_PATH)
_head_member(3, "query", _OFF_QUERY)
_head_member(4, "content_type", _OFF_CONTENT_TYPE)
_head_member(5, "accept", _OFF_ACCEPT)
_head_member(6, "origin", _OFF_ORIGIN)
_head_member(7, "request_id", _OFF_REQUEST_ID)
_head_member(8, "user_agent", _OFF_USER_AGENT)
PyType_Modified(RequestHead)


# ---------------------------------------------------------------- parse_head

cdef inline bint _index_arg(object o, Py_ssize_t* out) noexcept:
    """A plain int in [0, _BIG]: the range parse_head computes with in C."""
    cdef Py_ssize_t v
    if not PyLong_CheckExact(o):
        return False
    v = PyLong_AsSsize_t(o)
    if v == -1 and PyErr_Occurred() != NULL:
        PyErr_Clear()
        return False
    if v < 0 or v > _BIG:
        return False
    out[0] = v
    return True


def parse_head(buf, start=0, max_head=MAX_HEAD, max_headers=MAX_HEADERS, max_target=MAX_TARGET):
    """Parse the request head found in ``buf[start:]`` (see parser_py.parse_head).

    Returns a :class:`RequestHead`, or ``None`` when the head is not complete
    yet; raises :class:`ParseError` with parser_py's status and message.
    """
    cdef Py_ssize_t c_start = 0, c_max_head = 0, c_max_headers = 0, c_max_target = 0
    cdef Py_buffer view
    if not (_index_arg(start, &c_start) and _index_arg(max_head, &c_max_head)
            and _index_arg(max_headers, &c_max_headers) and _index_arg(max_target, &c_max_target)):
        # negative offsets, huge or non-int limits: parser_py's exact semantics
        return _py().parse_head(buf, start, max_head, max_headers, max_target)
    if PyBytes_CheckExact(buf) and c_start <= PyBytes_GET_SIZE(buf):
        return _parse_head_fast(buf, <const unsigned char*>PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf),
                                c_start, c_max_head, c_max_headers, c_max_target)
    if not PyByteArray_CheckExact(buf) or c_start > PyByteArray_GET_SIZE(buf):
        return _py().parse_head(buf, start, max_head, max_headers, max_target)
    # hold a buffer export so the bytearray cannot be resized under our pointer;
    # PyByteArray_AS_STRING, like PyBytes_AS_STRING, is followed by a NUL byte
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        return _parse_head_fast(None, <const unsigned char*>PyByteArray_AS_STRING(buf), view.len,
                                c_start, c_max_head, c_max_headers, c_max_target)
    finally:
        PyBuffer_Release(&view)


cdef object _parse_head_fast(object src, const unsigned char* s, Py_ssize_t size, Py_ssize_t origin,
                             Py_ssize_t max_head, Py_ssize_t max_headers, Py_ssize_t max_target):
    """One optimistic pass for the usual request: origin-form target, HTTP/1.x,
    plain field lines, the whole head present. Anything else (and any error)
    goes to _parse_head_exact, which applies parser_py's rules in its order."""
    cdef Py_ssize_t start = origin, p, sp1, ts, tlen, l0, ls, colon, vs, ve, nlines = 0
    cdef int minor
    cdef Lifted f
    while start + 2 <= size and s[start] == 0x0D and s[start + 1] == 0x0A:
        start += 2
    p = start
    while TCHAR[s[p]]:
        p += 1
    if p == start or s[p] != 0x20 or s[p + 1] != 0x2F:
        return _parse_head_exact(src, s, size, origin, max_head, max_headers, max_target)
    sp1 = p
    p += 1
    ts = p
    while TARGET_OK[s[p]]:
        p += 1
    tlen = p - ts
    if (s[p] != 0x20 or size - p < 11 or s[p + 1] != c'H' or s[p + 2] != c'T' or s[p + 3] != c'T'
            or s[p + 4] != c'P' or s[p + 5] != c'/' or s[p + 6] != c'1' or s[p + 7] != c'.'
            or (s[p + 8] != c'1' and s[p + 8] != c'0') or s[p + 9] != 0x0D or s[p + 10] != 0x0A):
        return _parse_head_exact(src, s, size, origin, max_head, max_headers, max_target)
    minor = s[p + 8] - 0x30
    l0 = p + 9
    if l0 - start > max_target + 32 or tlen > max_target:
        return _parse_head_exact(src, s, size, origin, max_head, max_headers, max_target)
    _lifted_init(&f)
    p = l0 + 2
    while True:
        if s[p] == 0x0D:
            if s[p + 1] == 0x0A:
                break
            return _parse_head_exact(src, s, size, origin, max_head, max_headers, max_target)
        ls = p
        while TCHAR[s[p]]:
            p += 1
        if s[p] != 0x3A or p == ls:
            return _parse_head_exact(src, s, size, origin, max_head, max_headers, max_target)
        colon = p
        p = _scan_value(s, p + 1, size)
        if s[p] != 0x0D or s[p + 1] != 0x0A:
            return _parse_head_exact(src, s, size, origin, max_head, max_headers, max_target)
        nlines += 1
        vs = colon + 1
        ve = p
        p += 2
        _strip(s, &vs, &ve)
        if nlines > max_headers or _lift(&f, s, ls, colon - ls, vs, ve):
            return _parse_head_exact(src, s, size, origin, max_head, max_headers, max_target)
    # p: the blank line; the head's CRLFCRLF is at p - 2
    if p + 2 > origin + max_head:
        return _parse_head_exact(src, s, size, origin, max_head, max_headers, max_target)
    return _finish(src, s, size, &f, minor, start, sp1, ts, tlen, 0, 0, l0 + 2, p - 2)


cdef object _parse_head_exact(object src, const unsigned char* s, Py_ssize_t size, Py_ssize_t start,
                              Py_ssize_t max_head, Py_ssize_t max_headers, Py_ssize_t max_target):
    """parser_py.parse_head step by step (every check, in its order)."""
    cdef Py_ssize_t origin = start, lim, end, l0, sp1, sp2, i, tlen
    cdef Py_ssize_t hs, he, p, ls, colon, vs, ve, nlines, a = 0, b = 0
    cdef const unsigned char* q
    cdef const unsigned char* t
    cdef int minor = 0, code
    cdef Lifted f

    # RFC 9112 §2.2: empty lines before the request line (they count in max_head)
    while start + 2 <= size and s[start] == 0x0D and s[start + 1] == 0x0A:
        start += 2
    lim = origin + max_head
    if lim > size:
        lim = size
    end = -1
    if lim - start >= 4:
        q = <const unsigned char*>memmem(s + start, lim - start, b"\r\n\r\n", 4)
        if q != NULL:
            end = q - s
    if end < 0:
        lim = size if size - start <= max_target + 32 else start + max_target + 32
        if start < size and _find_crlf(s, start, lim) < 0 and size - start > max_target + 32:
            _raise(414, "request line too long")
        if size - origin >= max_head:
            _raise(431, "request head too large")
        _refuse_partial(s, start, size)
        return None

    # ---- request line: s[start:l0]
    l0 = _find_crlf(s, start, end + 2)
    if l0 - start > max_target + 32:
        _raise(414, "request line too long")
    q = <const unsigned char*>memchr(s + start, 0x20, l0 - start)
    if q == NULL:
        _raise(400, "malformed request line")
    sp1 = q - s
    q = <const unsigned char*>memchr(s + sp1 + 1, 0x20, l0 - sp1 - 1)
    if q == NULL:
        _raise(400, "malformed request line")
    sp2 = q - s
    if memchr(s + sp2 + 1, 0x20, l0 - sp2 - 1) != NULL:
        _raise(400, "malformed request line")
    if sp1 == start:
        _raise(400, "invalid method")
    for i in range(start, sp1):
        if not TCHAR[s[i]]:
            _raise(400, "invalid method")
    t = s + sp1 + 1
    tlen = sp2 - sp1 - 1
    if tlen > max_target:
        _raise(414, "request target too long")
    if tlen == 0:
        _raise(400, "invalid request target")
    for i in range(tlen):
        if not TARGET_OK[t[i]]:
            _raise(400, "invalid request target")
    # version: s[sp2+1:l0]
    q = s + sp2 + 1
    if (l0 - sp2 - 1 != 8 or memcmp(q, b"HTTP/", 5) != 0 or q[6] != 0x2E
            or not (0x30 <= q[5] <= 0x39) or not (0x30 <= q[7] <= 0x39)):
        _raise(400, "invalid HTTP version")
    if q[5] == 0x31 and q[7] == 0x31:
        minor = 1
    elif q[5] == 0x31 and q[7] == 0x30:
        minor = 0
    else:
        _raise(505, "HTTP version not supported; use HTTP/1.1 or HTTP/1.0")

    # ---- target → path, query (parser_py._split_target); a: where rest starts
    # in the target (-1: asterisk-form), b: whether rest gets a "/" in front
    if t[0] == 0x2F:
        a = 0
    elif tlen == 1 and t[0] == 0x2A:
        if not (sp1 - start == 7 and memcmp(s + start, b"OPTIONS", 7) == 0):
            _raise(400, "asterisk-form target is only valid for OPTIONS")
        a = -1
    else:
        if tlen >= 7 and _ieq(t, b"http://", 7):
            a = 7
        elif tlen >= 8 and _ieq(t, b"https://", 8):
            a = 8
        else:
            _raise(400, "invalid request target")
        i = a
        while i < tlen and t[i] != 0x2F and t[i] != 0x3F:
            i += 1
        if i == a:
            _raise(400, "absolute-form target without a host")
        a = i
        b = 1 if (a == tlen or t[a] == 0x3F) else 0

    # ---- header lines: s[hs:he], each ending in CRLF (the last one at `end`)
    _lifted_init(&f)
    hs = l0 + 2
    he = end + 2
    p = hs
    nlines = 0
    while p < he:
        ls = p
        while TCHAR[s[p]]:
            p += 1
        if s[p] != 0x3A or p == ls:
            _bad_header_line(s, ls, hs, he, max_headers)
        colon = p
        p += 1
        while FIELD_OK[s[p]]:
            p += 1
        if s[p] != 0x0D or s[p + 1] != 0x0A:
            _bad_header_line(s, ls, hs, he, max_headers)
        nlines += 1
        if nlines > max_headers:
            _raise(431, "too many header fields")
        vs = colon + 1
        ve = p
        p += 2
        _strip(s, &vs, &ve)
        code = _lift(&f, s, ls, colon - ls, vs, ve)
        if code == 1:
            _header_error(s, hs, he, max_headers, 400, "duplicate Content-Length")
        elif code == 2:
            _header_error(s, hs, he, max_headers, 400, "invalid Content-Length")
    return _finish(src, s, size, &f, minor, start, sp1, sp1 + 1, tlen, a, b, hs, end)


cdef object _finish(object src, const unsigned char* s, Py_ssize_t size, Lifted* f, int minor,
                    Py_ssize_t ms, Py_ssize_t me, Py_ssize_t ts, Py_ssize_t tlen,
                    Py_ssize_t a, Py_ssize_t b, Py_ssize_t hs, Py_ssize_t end):
    """The checks parser_py makes after the field lines, then the RequestHead.

    Method s[ms:me], target s[ts:ts+tlen] (a, b: see _parse_head_exact),
    header lines s[hs:end+2], the head ends at end + 4.
    """
    cdef bint chunked = False, keep_alive, expect_continue = False
    cdef const unsigned char* t = s + ts
    cdef const unsigned char* q
    cdef Py_ssize_t i, he = end + 2
    cdef RequestHead head
    if f.te_seen:
        if f.content_length >= 0:
            _raise(400, "both Content-Length and Transfer-Encoding")
        if minor == 0:
            _raise(400, "Transfer-Encoding in an HTTP/1.0 request")
        if f.te_invalid:
            _raise(400, "invalid transfer coding")
        if f.te_codings == 0 or not f.te_last_chunked:
            _raise(400, "chunked must be the final transfer coding")
        if f.te_chunked > 1:
            _raise(400, "chunked applied more than once")
        if f.te_codings > 1:
            _raise(501, "unsupported transfer coding; only chunked is implemented")
        chunked = True
    if minor == 1 and f.hosts != 1:
        _raise(400, "an HTTP/1.1 request needs exactly one Host field")
    keep_alive = minor == 1
    if f.conn_close:
        keep_alive = False
    elif f.conn_keep:
        keep_alive = True
    if f.expect_seen and minor == 1:
        if not f.expect_ok:
            _raise(417, "only the 100-continue expectation is supported")
        expect_continue = True

    head = RequestHead.__new__(RequestHead)
    head.method = _method_text(s + ms, me - ms)
    if tlen == 1 and t[0] == 0x2F:
        target = _S_SLASH
    elif tlen <= 64:
        target = _target_cache.get(t, tlen)
    else:
        target = _ascii(t, tlen)
    head.target = target
    if a < 0:
        head.path = _S_STAR
        head.query = _S_EMPTY
    else:
        q = <const unsigned char*>memchr(t + a, 0x3F, tlen - a)
        if q == NULL:
            head.query = _S_EMPTY
            if b:
                head.path = _S_SLASH
            elif a == 0:
                head.path = target
            else:
                head.path = _path_text(t + a, tlen - a)
        else:
            i = q - t
            head.path = _S_SLASH if b else _path_text(t + a, i - a)
            head.query = _ascii(q + 1, tlen - i - 1)
    head.version = minor
    head.end = end + 4
    head.content_length = f.content_length
    head.chunked = chunked
    head.keep_alive = keep_alive
    head.expect_continue = expect_continue
    if f.ct_s >= 0:
        head.content_type = _ctype_cache.get(s + f.ct_s, f.ct_e - f.ct_s)
    if f.acc_n == 1:
        head.accept = _accept_cache.get(s + f.acc_s, f.acc_e - f.acc_s)
    elif f.acc_n > 1:
        head.accept = _all_accept(s, hs, he)
    if f.org_s >= 0:
        head.origin = _origin_cache.get(s + f.org_s, f.org_e - f.org_s)
    if f.rid_s >= 0:
        head.request_id = _latin1(s + f.rid_s, f.rid_e - f.rid_s)
    elif f.pid_s >= 0:
        head.request_id = _latin1(s + f.pid_s, f.pid_e - f.pid_s)
    if f.ua_s >= 0:
        head.user_agent = _agent_cache.get(s + f.ua_s, f.ua_e - f.ua_s)
    if hs >= he:
        head._fields = []
    else:
        if src is not None and size <= 4 * (he - hs) + 8192:
            head._src = src       # immutable bytes: keep a reference, no copy
            head._hs = hs
            head._he = he
        else:
            head._src = PyBytes_FromStringAndSize(<const char*>s + hs, he - hs)
            head._hs = 0
            head._he = he - hs
    return head


# ---------------------------------------------------------------- ChunkedDecoder

cdef long long _capped(object limit) except? -1:
    """An int limit as a long long, held within +-_LIMIT_CAP."""
    cdef int overflow = 0
    cdef long long value = PyLong_AsLongLongAndOverflow(limit, &overflow)
    if overflow > 0 or value > _LIMIT_CAP:
        return _LIMIT_CAP
    if overflow < 0 or value < -_LIMIT_CAP:
        return -_LIMIT_CAP
    return value


cdef enum:
    _SIZE = 0
    _DATA = 1
    _DATA_END = 2
    _TRAILER = 3
    _DONE = 4


cdef class ChunkedDecoder:
    """Incremental decoder of a chunked request body (see parser_py.ChunkedDecoder)."""

    cdef readonly object max_body
    cdef readonly object max_trailer, max_fields  # as given, like parser_py
    cdef long long _max_trailer, _max_fields        # the same, held within +-_LIMIT_CAP
    cdef readonly int state
    cdef readonly unsigned long long remaining
    cdef readonly long long trailer_bytes
    cdef public object trailers
    cdef bint _fast                 # 0 <= max_body < 2**63: size counted in C
    cdef unsigned long long _max, _size
    cdef object _size_obj           # otherwise: size as a Python int
    cdef Py_ssize_t _ntrailers
    cdef PyObject* _buf             # the body: a bytes object of _cap bytes, _len used, ours alone
    cdef Py_ssize_t _len, _cap
    cdef bint _sealed               # _buf shrunk to _len and handed out by body()

    def __cinit__(self, max_body, max_trailer=MAX_HEAD, max_fields=MAX_HEADERS):
        self._buf = NULL
        self._len = 0
        self._cap = 0
        self._sealed = False
        self.max_body = max_body
        self.max_trailer = max_trailer
        self.max_fields = max_fields
        self._max_trailer = _capped(max_trailer)
        self._max_fields = _capped(max_fields)
        self.state = _SIZE
        self.remaining = 0
        self.trailer_bytes = 0
        self.trailers = []
        self._ntrailers = 0
        self._size = 0
        self._size_obj = 0
        self._fast = False
        cdef long long limit
        cdef int overflow = 0
        if PyLong_CheckExact(max_body):
            limit = PyLong_AsLongLongAndOverflow(max_body, &overflow)
            if overflow == 0 and limit >= 0:  # past 63 bits: count with Python ints
                self._max = <unsigned long long>limit
                self._fast = True

    def __dealloc__(self):
        Py_XDECREF(self._buf)

    @property
    def done(self):
        return self.state == _DONE

    @property
    def size(self):
        return self._size if self._fast else self._size_obj

    def body(self):
        """The decoded body so far, as bytes."""
        if self._buf == NULL:
            return b""
        if self.state != _DONE:
            return PyBytes_FromStringAndSize(_bytes_data(self._buf), self._len)
        if not self._sealed:  # complete: no more appends, give the buffer itself out
            _PyBytes_Resize(&self._buf, self._len)
            self._cap = self._len
            self._sealed = True
        return <object>self._buf

    def take(self):
        """The body bytes decoded since the last ``take`` (the decoder keeps none of them)."""
        cdef PyObject* buf = self._buf
        if buf == NULL or self._len == 0:
            return b""
        if self._len != self._cap:
            _PyBytes_Resize(&self._buf, self._len)
            buf = self._buf
        self._buf = NULL
        self._len = 0
        self._cap = 0
        self._sealed = False
        out = <object>buf
        Py_DECREF(out)     # the reference _append took is now ``out``'s
        return out

    def feed(self, buf, Py_ssize_t pos=0):
        """Consume what can be of ``buf[pos:]``; return the new position."""
        cdef Py_buffer view
        if pos < 0:
            raise ValueError("parser_c: ChunkedDecoder.feed needs pos >= 0")
        if PyBytes_CheckExact(buf):
            return self._feed(<const unsigned char*>PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf), pos)
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            return self._feed(<const unsigned char*>view.buf, view.len, pos)
        finally:
            PyBuffer_Release(&view)

    cdef int _append(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t avail) except -1:
        """Append p[:n]; ``avail`` (>= n) bytes of input are at hand, so room for
        them (within max_body) costs no more memory than the input itself."""
        cdef Py_ssize_t cap
        if n > self._cap - self._len:
            if n > PY_SSIZE_T_MAX - self._len:  # no bytes object holds the body (32-bit platforms)
                raise MemoryError("the decoded body does not fit one bytes object")
            if avail > PY_SSIZE_T_MAX - self._len:
                avail = n
            cap = self._cap * 2 if self._cap <= PY_SSIZE_T_MAX // 2 else PY_SSIZE_T_MAX
            if cap < self._len + avail:
                cap = self._len + avail
            if self._fast and <unsigned long long>cap > self._max:
                cap = <Py_ssize_t>self._max  # below cap: fits
            if cap < self._len + n:
                cap = self._len + n
            if self._buf == NULL:
                obj = PyBytes_FromStringAndSize(NULL, cap)
                Py_INCREF(obj)
                self._buf = <PyObject*>obj
            else:
                _PyBytes_Resize(&self._buf, cap)
            self._cap = cap
        memcpy(_bytes_data(self._buf) + self._len, p, n)
        self._len += n
        return 0

    cdef Py_ssize_t _feed(self, const unsigned char* s, Py_ssize_t size, Py_ssize_t pos) except -1:
        cdef Py_ssize_t eol, lim, take
        while pos < size:
            if self.state == _SIZE:
                lim = pos + _MAX_CHUNK_LINE
                if lim > size:
                    lim = size
                eol = _find_crlf(s, pos, lim)
                if eol < 0:
                    if size - pos >= _MAX_CHUNK_LINE:
                        _raise(400, "chunk size line too long")
                    return pos
                self._size_line(s, pos, eol)
                pos = eol + 2
            elif self.state == _DATA:
                take = size - pos
                if <unsigned long long>take > self.remaining:
                    take = <Py_ssize_t>self.remaining
                self._append(s + pos, take, size - pos)
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = _DATA_END
            elif self.state == _DATA_END:
                if size - pos < 2:
                    if s[pos] != 0x0D:
                        _raise(400, "chunk data longer than its declared size")
                    return pos
                if s[pos] != 0x0D or s[pos + 1] != 0x0A:
                    _raise(400, "chunk data longer than its declared size")
                pos += 2
                self.state = _SIZE
            elif self.state == _TRAILER:
                pos = self._trailer_line(s, size, pos)
                if pos < 0:
                    return -pos - 1
                if self.state == _DONE:
                    return pos
            else:
                return pos
        return pos

    cdef Py_ssize_t _trailer_line(self, const unsigned char* s, Py_ssize_t size,
                                  Py_ssize_t pos) except? -2:
        """One trailer line; returns the new pos, or -(pos+1) when it needs more bytes."""
        cdef Py_ssize_t eol
        cdef long long lim, room = self._max_trailer - self.trailer_bytes
        # buf.find(b"\r\n", pos, pos + room + 2), slice-normalized, with no sum past the buffer
        if room + 2 >= size - pos:
            lim = size
        else:
            lim = pos + room + 2
            if lim < 0:
                lim += size
                if lim < 0:
                    lim = 0
        eol = _find_crlf(s, pos, <Py_ssize_t>lim) if lim > pos else -1
        if eol < 0:
            if size - pos >= room:
                _raise(431, "chunked trailer section too large")
            return -pos - 1
        self.trailer_bytes += eol + 2 - pos
        if eol == pos:
            self.state = _DONE
            return pos + 2
        if _has_cr_or_lf(s, pos, eol):
            _raise(400, "bare CR or LF in chunked trailer")
        if self._ntrailers >= self._max_fields:
            _raise(431, "too many trailer fields")
        _split_field_check(s, pos, eol)
        self.trailers.append(_build_fields(s, pos, eol + 2)[0])
        self._ntrailers += 1
        return eol + 2

    cdef int _size_line(self, const unsigned char* s, Py_ssize_t ls, Py_ssize_t le) except -1:
        cdef Py_ssize_t digits = 0, n = le - ls, i
        cdef unsigned long long v = 0
        while digits < n and HEXVAL[s[ls + digits]]:
            digits += 1
        if digits == 0:
            _raise(400, "invalid chunk size")
        if digits > 16:
            _raise(400, "chunk size too large")
        if digits < n:
            line = PyBytes_FromStringAndSize(<const char*>s + ls, n)
            if _py()._CHUNK_EXT.fullmatch(line, digits) is None:
                _raise(400, "invalid chunk extension")
        for i in range(digits):
            v = (v << 4) | (HEXVAL[s[ls + i]] - 1)
        if v == 0:
            self.state = _TRAILER
            return 0
        if self._fast:
            if v > self._max - self._size:
                _raise(413, "request body too large")
            self._size += v
        else:
            total = self._size_obj + v
            if total > self.max_body:
                _raise(413, "request body too large")
            self._size_obj = total
        self.remaining = v
        self.state = _DATA
        return 0


# ---------------------------------------------------------------- query and path

cdef object _unquote(const unsigned char* s, Py_ssize_t a, Py_ssize_t b, bint plus,
                     const char* errors):
    """Percent-decode (and "+" → " " when ``plus``) latin-1 bytes s[a:b], then
    decode them as UTF-8, invalid sequences handled by the codec handler ``errors``."""
    cdef Py_ssize_t n = b - a, i = a, j = 0
    cdef unsigned char stack[256]
    cdef unsigned char* out = stack
    cdef unsigned char c, h1, h2
    if n > 256:
        out = <unsigned char*>PyMem_Malloc(n)
        if out == NULL:
            raise MemoryError()
    try:
        while i < b:
            c = s[i]
            if c == 0x25 and i + 2 < b:
                h1 = HEXVAL[s[i + 1]]
                h2 = HEXVAL[s[i + 2]]
                if h1 and h2:
                    out[j] = ((h1 - 1) << 4) | (h2 - 1)
                    j += 1
                    i += 3
                    continue
            elif c == 0x2B and plus:
                c = 0x20
            out[j] = c
            j += 1
            i += 1
        return PyUnicode_DecodeUTF8(<const char*>out, j, errors)
    finally:
        if out != stack:
            PyMem_Free(out)


cdef object _component(object text, const unsigned char* s, Py_ssize_t a, Py_ssize_t b):
    """One key or value of parse_query, as parser_py decodes it."""
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(a, b):
        c = s[i]
        if c == 0x25 or c == 0x2B or c >= 0x80:
            return _unquote(s, a, b, True, _QUERY_ERRORS)
    return _ascii(s + a, b - a)


cdef bytes _QUERY_ERRORS_NAME = QUERY_ERRORS.encode("ascii")   # keeps the char* below alive
cdef const char* _QUERY_ERRORS = _QUERY_ERRORS_NAME


def parse_query(query):
    """``a=1&b=x+y&b=%E2%9C%93`` → ``[("a", "1"), ("b", "x y"), ("b", "✓")]`` (see parser_py)."""
    cdef const unsigned char* s
    cdef const unsigned char* q
    cdef Py_ssize_t n, i, j, eq
    if not PyUnicode_CheckExact(query) or PyUnicode_KIND(query) != PyUnicode_1BYTE_KIND:
        return _py().parse_query(query)
    cdef list pairs = []
    n = PyUnicode_GET_LENGTH(query)
    if n == 0:
        return pairs
    s = PyUnicode_1BYTE_DATA(query)
    i = 0
    while i <= n:
        q = <const unsigned char*>memchr(s + i, 0x26, n - i)
        j = n if q == NULL else q - s
        if j > i:
            q = <const unsigned char*>memchr(s + i, 0x3D, j - i)
            if q == NULL:
                pairs.append((_component(query, s, i, j), _S_EMPTY))
            else:
                eq = q - s
                pairs.append((_component(query, s, i, eq), _component(query, s, eq + 1, j)))
        i = j + 1
    return pairs


def unquote_path(path):
    """Percent-decode a latin-1 path as UTF-8 (see parser_py.unquote_path)."""
    cdef Py_ssize_t n
    cdef const unsigned char* s
    if not PyUnicode_CheckExact(path) or PyUnicode_KIND(path) != PyUnicode_1BYTE_KIND:
        return _py().unquote_path(path)
    n = PyUnicode_GET_LENGTH(path)
    s = PyUnicode_1BYTE_DATA(path)
    if memchr(s, 0x25, n) == NULL:
        if PyUnicode_IS_ASCII(path):
            return path
        return PyUnicode_DecodeUTF8(<const char*>s, n, "replace")
    return _unquote(s, 0, n, False, "replace")


# ---------------------------------------------------------------- access lines
# Compiled twins of ``server/access_log.py``'s ``text_lines`` and ``json_lines`` (the readable
# rules): the same lines for every record, read from the head's C fields, made as the UTF-8
# bytes written to the stream. One line a request is written at the default settings, so their
# cost is the access log's cost.

cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int* ptype) except NULL
    void* PyMem_Realloc(void* p, size_t n)
    bint PyUnicode_Check(object o)
    void* PyUnicode_DATA(object o)
    unsigned int PyUnicode_READ(int kind, void* data, Py_ssize_t i)   # a Py_UCS4
    object PyUnicode_AsUTF8String(object o)

cdef struct _Out:
    char* data
    Py_ssize_t size, cap   # cap > 0


cdef inline int _reserve(_Out* out, Py_ssize_t n) except -1:
    """Room for ``n`` (>= 0) more bytes after ``size``."""
    if n <= out.cap - out.size:
        return 0
    return _grow(out, n)


cdef int _grow(_Out* out, Py_ssize_t n) except -1:
    cdef Py_ssize_t cap = out.cap
    cdef char* grown
    if n > PY_SSIZE_T_MAX - out.size:   # past the largest size (2**31 - 1 on 32-bit hosts)
        raise MemoryError()
    while out.size + n > cap:
        # doubling, or the size needed once doubling would pass PY_SSIZE_T_MAX
        cap = cap * 2 if cap <= PY_SSIZE_T_MAX // 2 else out.size + n
    grown = <char*>PyMem_Realloc(out.data, <size_t>cap)
    if grown == NULL:
        raise MemoryError()
    out.data, out.cap = grown, cap
    return 0


cdef inline int _put(_Out* out, const char* text, Py_ssize_t n) except -1:
    if n > out.cap - out.size:
        _grow(out, n)
    memcpy(out.data + out.size, text, n)
    out.size += n
    return 0


cdef int _put_ll(_Out* out, long long value) except -1:
    """``value`` in decimal."""
    cdef char digits[24]
    cdef char* end = digits + 24
    cdef char* p = end
    # the magnitude as unsigned: -(-2**63) does not fit a long long
    cdef unsigned long long rest = (<unsigned long long>value if value >= 0
                                    else 0ULL - <unsigned long long>value)
    while True:   # at most 20 digits and a sign: 24 is room enough
        p -= 1
        p[0] = <char>(48 + rest % 10)
        rest //= 10
        if rest == 0:
            break
    if value < 0:
        p -= 1
        p[0] = b'-'
    return _put(out, p, end - p)


cdef int _put_int(_Out* out, object value) except -1:
    """An int in decimal (past 64 bits too, where orjson would refuse it)."""
    cdef int overflow = 0
    cdef long long small = PyLong_AsLongLongAndOverflow(value, &overflow)
    cdef bytes text
    if overflow:
        text = str(value).encode()
        return _put(out, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))
    return _put_ll(out, small)


cdef const char* _HEX = "0123456789abcdef"
# characters of a JSON string written as they are: ASCII from space on, but for the quote and
# the backslash
cdef unsigned char JSON_PLAIN[128]
for _c in range(128):
    JSON_PLAIN[_c] = 1 if _c >= 0x20 and _c != 34 and _c != 92 else 0
# the escapes of the rest, as orjson writes them (a backslash, then this); 0: the u00XX form
cdef char JSON_SHORT[128]
for _c in range(128):
    JSON_SHORT[_c] = 0
JSON_SHORT[34], JSON_SHORT[92] = 34, 92
JSON_SHORT[8], JSON_SHORT[9], JSON_SHORT[10], JSON_SHORT[12], JSON_SHORT[13] = (
    b'b', b't', b'n', b'f', b'r')


# how _put_chars writes text
cdef enum:
    AS_JSON = 0     # inside a JSON string
    AS_TEXT = 1     # as it is
    AS_QUOTED = 2   # as it is, but a quote as \" (the user agent of a text line)


cdef int _put_chars(_Out* out, object text, int mode) except -1:
    r"""The str ``text`` as UTF-8, but a surrogate (which UTF-8 cannot carry) as its \uXXXX
    escape, as stderr's backslashreplace writes it (``access_log.json_value`` and
    ``text_lines``). ``AS_JSON``: inside a JSON string, as orjson writes it: ``"`` and ``\``
    escaped, \b \t \n \f \r as such, other control characters as \u00XX (lower-case hex),
    DEL as it is."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text), i, stop, begin = 0
    cdef const unsigned char* ascii
    cdef int kind
    cdef void* data
    cdef unsigned int c
    cdef unsigned char* p
    if PyUnicode_IS_ASCII(text):
        ascii = PyUnicode_1BYTE_DATA(text)
        if mode == AS_TEXT or (mode == AS_QUOTED and memchr(ascii, 34, n) == NULL):
            return _put(out, <const char*>ascii, n)
        if mode == AS_JSON:
            for i in range(n):
                if not JSON_PLAIN[ascii[i]]:
                    break
            else:
                return _put(out, <const char*>ascii, n)
    kind = PyUnicode_KIND(text)
    data = PyUnicode_DATA(text)
    while begin < n:
        # at most 6 bytes a character: room reserved a slice at a time, so that the size asked
        # for stays small whatever the length of the text
        stop = begin + 4096 if n - begin > 4096 else n
        _reserve(out, (stop - begin) * 6)
        p = <unsigned char*>out.data + out.size
        for i in range(begin, stop):
            c = PyUnicode_READ(kind, data, i)
            if c < 0x80:
                if mode != AS_JSON:
                    if c == 34 and mode == AS_QUOTED:
                        p[0] = 92
                        p += 1
                    p[0] = <unsigned char>c
                    p += 1
                elif JSON_PLAIN[c]:
                    p[0] = <unsigned char>c
                    p += 1
                elif JSON_SHORT[c]:
                    p[0], p[1] = 92, JSON_SHORT[c]
                    p += 2
                else:
                    p[0], p[1], p[2], p[3] = 92, 117, 48, 48   # \u00
                    p[4], p[5] = _HEX[c >> 4], _HEX[c & 15]
                    p += 6
            elif c < 0x800:
                p[0], p[1] = 0xC0 | (c >> 6), 0x80 | (c & 0x3F)
                p += 2
            elif 0xD800 <= c <= 0xDFFF:
                p[0], p[1] = 92, 117   # \u
                p[2], p[3] = _HEX[c >> 12], _HEX[(c >> 8) & 15]
                p[4], p[5] = _HEX[(c >> 4) & 15], _HEX[c & 15]
                p += 6
            elif c < 0x10000:
                p[0], p[1], p[2] = 0xE0 | (c >> 12), 0x80 | ((c >> 6) & 0x3F), 0x80 | (c & 0x3F)
                p += 3
            else:
                p[0], p[1] = 0xF0 | (c >> 18), 0x80 | ((c >> 12) & 0x3F)
                p[2], p[3] = 0x80 | ((c >> 6) & 0x3F), 0x80 | (c & 0x3F)
                p += 4
        out.size = <char*>p - out.data
        begin = stop
    return 0


cdef int _put_json(_Out* out, object value, object dumps) except -1:
    """``value`` as orjson writes it (text by :func:`_put_chars`); None, ints and text here,
    anything else by ``dumps``."""
    cdef bytes encoded
    if value is None:
        return _put(out, "null", 4)
    if PyLong_CheckExact(value):
        return _put_int(out, value)
    if PyUnicode_Check(value):
        _put(out, '"', 1)
        _put_chars(out, value, AS_JSON)
        return _put(out, '"', 1)
    encoded = dumps(value)
    return _put(out, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded))


cdef inline int _put_field(_Out* out, const char* key, object value, object dumps) except -1:
    """``key`` (JSON text) then ``value`` as orjson writes it."""
    _put(out, key, strlen(key))
    return _put_json(out, value, dumps)


cdef long long _TENS[4]
_TENS[0], _TENS[1], _TENS[2], _TENS[3] = 1, 10, 100, 1000


cdef int _put_fixed(_Out* out, double value, int places, bint trim) except -1:
    """``value`` with ``places`` (1 to 3) decimals, as ``f"{value:.{places}f}"`` writes it
    (the exact binary value rounded, ties to even); ``trim``: without trailing zeros after the
    first decimal. In integers when ``value`` is in (0, 1e9) and ``value * 10**places`` is not
    within 1e-3 of a tie: its fraction is then the exact product's within 2**-14 (its ulp is
    at most 2**-13 below 1e12), so rounding it to the nearest integer rounds the exact product
    the same way. Anything else through dtoa (PyOS_double_to_string)."""
    cdef long long scale = _TENS[places], n, whole, frac
    cdef double scaled, below, fraction
    cdef char digits[32]
    cdef char* p = digits + 32
    cdef char* text
    cdef Py_ssize_t size
    cdef int i
    if 0.0 < value < 1e9:
        scaled = value * <double>scale
        below = floor(scaled)
        fraction = scaled - below   # exact: both below 2**53
        if not (0.499 < fraction < 0.501):
            n = <long long>below + (1 if fraction > 0.5 else 0)
            whole, frac = n // scale, n % scale
            if trim:
                while places > 1 and frac % 10 == 0:
                    frac //= 10
                    places -= 1
            for i in range(places):
                p -= 1
                p[0] = <char>(48 + frac % 10)
                frac //= 10
            p -= 1
            p[0] = b'.'
            while True:
                p -= 1
                p[0] = <char>(48 + whole % 10)
                whole //= 10
                if whole == 0:
                    break
            return _put(out, p, digits + 32 - p)
    text = PyOS_double_to_string(value, b'f', places, 0, NULL)
    try:
        size = strlen(text)
        if trim:
            while text[size - 1] == b'0' and text[size - 2] != b'.':
                size -= 1
        return _put(out, text, size)
    finally:
        PyMem_Free(text)


cdef int _put_duration(_Out* out, double ms, object dumps) except -1:
    """``round(ms, 3)`` as orjson writes it. Below 10**12 that value has at most 15 significant
    digits, so its shortest text is its 3 decimals without their trailing zeros (at least one
    kept): the digits ``round`` itself computes (correctly rounded, ties to even)."""
    if not (0.0 <= ms < 1e12):
        return _put_json(out, round(ms, 3), dumps)
    return _put_fixed(out, ms, 3, True)


cdef tuple _fields_of(object head_obj, long long* content_length, bint* chunked):
    """``(method, target, request_id, user_agent, version)`` of ``head_obj``, its content length
    and whether it is chunked, by attribute: a head of parser_py (which parse_head returns for
    the inputs it hands over); the lines read this module's heads' C fields themselves."""
    content_length[0], chunked[0] = head_obj.content_length, head_obj.chunked
    return (head_obj.method, head_obj.target, head_obj.request_id, head_obj.user_agent,
            head_obj.version)


cdef inline object _record(object record):
    if type(record) is not tuple or len(record) != 6:
        raise TypeError("an access record is a tuple of 6 fields")
    return record


cdef int _put_formatted(_Out* out, object value) except -1:
    """``f"{value}"`` (AS_TEXT)."""
    if PyLong_CheckExact(value):
        return _put_int(out, value)
    return _put_chars(out, value if PyUnicode_CheckExact(value) else f"{value}", AS_TEXT)


cdef int _put_text_line(_Out* out, object record) except -1:
    """Twin of ``access_log.text_line`` (the rules), written to ``out``."""
    cdef object head_obj = _record(record)[1], reason = record[4]
    cdef object method, target, request_id, agent, version
    cdef RequestHead head
    cdef long long content_length
    cdef bint chunked
    _put_formatted(out, record[0])
    if head_obj is None:
        _put(out, ' - "-" ', 7)
    else:
        if type(head_obj) is RequestHead:
            head = <RequestHead>head_obj
            method, target = _text_field(<PyObject*>head.method), _text_field(<PyObject*>head.target)
            request_id = _text_field(<PyObject*>head.request_id)
            agent = _text_field(<PyObject*>head.user_agent)
            version, content_length, chunked = head.version, head.content_length, head.chunked
        else:
            method, target, request_id, agent, version = _fields_of(head_obj, &content_length,
                                                                    &chunked)
        _put(out, ' - "', 4)
        _put_formatted(out, method)
        _put(out, " ", 1)
        _put_formatted(out, target)
        _put(out, " HTTP/1.", 8)
        _put_formatted(out, version)
        _put(out, '" ', 2)
    _put_formatted(out, record[2])
    _put(out, " ", 1)
    _put_fixed(out, <double>record[3] * 1000, 2, False)
    if head_obj is None:
        _put(out, "ms - ", 5)
        _put_formatted(out, record[5])
        _put(out, ' - "-"', 6)
    else:
        _put(out, "ms ", 3)
        if content_length >= 0:
            _put_ll(out, content_length)
        else:
            _put(out, "-" if chunked else "0", 1)
        _put(out, " ", 1)
        _put_formatted(out, record[5])
        _put(out, " ", 1)
        _put_formatted(out, request_id or "-")
        _put(out, ' "', 2)
        if agent is None:
            _put(out, "-", 1)
        else:
            _put_chars(out, agent, AS_QUOTED)
        _put(out, '"', 1)
    if reason:
        if PyUnicode_CheckExact(reason):
            _put(out, " -- ", 4)
            _put_chars(out, reason, AS_TEXT)
        else:
            _put_chars(out, " -- " + reason, AS_TEXT)
    return 0


cdef int _put_json_line(_Out* out, object record, object dumps) except -1:
    """Twin of ``access_log.json_tail`` (the rules), written to ``out``."""
    cdef object head_obj = _record(record)[1], status = record[2], reason = record[4]
    cdef object method = None, target = None, request_id = None, agent = None, length = None
    cdef RequestHead head
    cdef long long content_length
    cdef bint chunked
    _put(out, '"message":', 10)
    if head_obj is None:
        _put_json(out, f"- - {status} -- {reason}", dumps)
    else:
        if type(head_obj) is RequestHead:
            head = <RequestHead>head_obj
            method, target = _text_field(<PyObject*>head.method), _text_field(<PyObject*>head.target)
            request_id = _text_field(<PyObject*>head.request_id)
            agent = _text_field(<PyObject*>head.user_agent)
            content_length, chunked = head.content_length, head.chunked
        else:
            method, target, request_id, agent, _ = _fields_of(head_obj, &content_length,
                                                              &chunked)
        if content_length >= 0:
            length = content_length
        elif not chunked:
            length = 0
        if (PyUnicode_CheckExact(method) and PyUnicode_CheckExact(target)
                and PyLong_CheckExact(status) and (not reason or PyUnicode_CheckExact(reason))):
            # f"{method} {target} {status}" + " -- " + reason, its pieces escaped one by one
            _put(out, '"', 1)
            _put_chars(out, method, AS_JSON)
            _put(out, " ", 1)
            _put_chars(out, target, AS_JSON)
            _put(out, " ", 1)
            _put_int(out, status)
            if reason:
                _put(out, " -- ", 4)
                _put_chars(out, reason, AS_JSON)
            _put(out, '"', 1)
        else:
            message = f"{method} {target} {status}"
            if reason:
                message = message + " -- " + reason
            _put_json(out, message, dumps)
    _put_field(out, ',"method":', method, dumps)
    _put_field(out, ',"path":', target, dumps)
    _put_field(out, ',"status":', status, dumps)
    _put(out, ',"duration_ms":', 15)
    _put_duration(out, <double>record[3] * 1000, dumps)
    _put_field(out, ',"bytes_in":', length, dumps)
    _put_field(out, ',"bytes_out":', record[5], dumps)
    _put_field(out, ',"client":', record[0], dumps)
    _put_field(out, ',"request_id":', request_id, dumps)
    _put_field(out, ',"user_agent":', agent, dumps)
    _put_field(out, ',"reason":', reason, dumps)
    return _put(out, "}", 1)


cdef bytes _lines(list records, str start, object dumps):
    """``start`` then a record's line, for each record (JSON lines when ``dumps`` is given)."""
    cdef bytes head = PyUnicode_AsUTF8String(start)
    cdef const char* head_data = PyBytes_AS_STRING(head)
    cdef Py_ssize_t head_size = PyBytes_GET_SIZE(head), count = len(records)
    cdef object record
    cdef _Out out
    # a line is some 100 to 300 bytes; a first guess that cannot overflow, grown as needed
    out.cap = 384 * (count if count < 4096 else 4096) + 64
    out.data = <char*>PyMem_Malloc(out.cap)
    if out.data == NULL:
        raise MemoryError()
    out.size = 0
    try:
        for record in records:
            _put(&out, head_data, head_size)
            if dumps is None:
                _put_text_line(&out, record)
            else:
                _put_json_line(&out, record, dumps)
            _put(&out, "\n", 1)
        return PyBytes_FromStringAndSize(out.data, out.size)
    finally:
        PyMem_Free(out.data)


def access_text_lines(list records, str start):
    """Twin of ``access_log.text_lines``: the text lines of ``records`` as UTF-8 bytes, each
    ``start`` (time, level, logger, pid) then the record's line."""
    return _lines(records, start, None)


def access_json_lines(list records, str start, dumps not None):
    """Twin of ``access_log.json_lines``: the JSON lines of ``records`` as UTF-8 bytes, each
    ``start`` (the fields every line shares, up to ``"pid":N,``) then the record's own fields."""
    return _lines(records, start, dumps)
