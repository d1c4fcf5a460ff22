# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Plain JSON documents read and written without orjson, as orjson reads and writes them.

Importing orjson costs about as much CPU as everything else lite_serving does
to answer its first request (it imports uuid, dataclasses, inspect, json and
datetime). ``lite_serving.codecs.json_codec`` uses this module until orjson is
loaded, for documents made only of ``dict`` (``str`` keys), ``list``,
``tuple`` (written), ``str``, ``int``, ``float``, ``bool`` and ``None``:

- :func:`loads` gives the objects ``orjson.loads`` gives, or ``NOT_PLAIN``;
- :func:`dumps` gives the bytes ``orjson.dumps`` gives, or ``None``.

Anything this module is not sure of is "not plain" and left to orjson:
invalid documents (so every error message is orjson's), lone surrogates,
integers past 64 bits, floats that overflow,
nesting deeper than ``MAX_DEPTH``, exact types' subclasses, any other type.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_Append
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from libc.math cimport isfinite
from libc.string cimport memcpy

cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    object PyUnicode_DecodeASCII(const char* s, Py_ssize_t size, const char* errors)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception) except? -1.0
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags, int* ptype) except NULL
    void PyMem_Free_str "PyMem_Free" (char* p)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    unsigned long long PyLong_AsUnsignedLongLong(object o) except? -1
    int Py_DTSF_ADD_DOT_0

__all__ = ["loads", "dumps", "NOT_PLAIN", "MAX_DEPTH"]

NOT_PLAIN = type("NotPlain", (), {"__repr__": lambda self: "NOT_PLAIN", "__slots__": (),
                                  "__module__": __name__})()
cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

cdef extern from *:
    # spelled in C: Cython would write them as decimal constants too large for a signed type
    const unsigned long long U64_MAX "0xFFFFFFFFFFFFFFFFULL"
    const unsigned long long I64_MIN_MAGNITUDE "0x8000000000000000ULL"

cdef enum:
    DEPTH_LIMIT = 128      # containers inside containers; deeper documents are left to orjson
MAX_DEPTH = DEPTH_LIMIT


class _NotPlain(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# reading


cdef inline bint _is_space(unsigned char c) noexcept:
    return c == 0x20 or c == 0x0A or c == 0x0D or c == 0x09


cdef inline int _hex(unsigned char c) noexcept:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef inline int _resize(char** buf, Py_ssize_t* capacity, Py_ssize_t size) except -1:
    """Reallocate ``buf[0]`` to ``size`` bytes, its contents kept, and record the new capacity."""
    cdef char* grown = <char*>PyMem_Realloc(buf[0], size)
    if grown == NULL:
        raise MemoryError()
    buf[0] = grown
    capacity[0] = size
    return 0


cdef class _Reader:
    cdef const unsigned char* p
    cdef Py_ssize_t i, n
    cdef char* scratch          # unescaped string bytes
    cdef Py_ssize_t scratch_size

    def __dealloc__(self):
        if self.scratch != NULL:
            PyMem_Free(self.scratch)

    cdef inline void skip_space(self) noexcept:
        while self.i < self.n and _is_space(self.p[self.i]):
            self.i += 1

    cdef object value(self, int depth):
        cdef unsigned char c
        if self.i >= self.n:
            raise _NotPlain
        c = self.p[self.i]
        if c == b'"':
            return self.string()
        if c == b'{':
            return self.mapping(depth + 1)
        if c == b'[':
            return self.sequence(depth + 1)
        if c == b'-' or 48 <= c <= 57:
            return self.number()
        if c == b't' and self.word(b"true", 4):
            return True
        if c == b'f' and self.word(b"false", 5):
            return False
        if c == b'n' and self.word(b"null", 4):
            return None
        raise _NotPlain

    cdef bint word(self, const char* text, Py_ssize_t size):
        cdef Py_ssize_t k
        if self.n - self.i < size:
            return False
        for k in range(size):
            if self.p[self.i + k] != <unsigned char>text[k]:
                return False
        self.i += size
        return True

    cdef object mapping(self, int depth):
        cdef dict result = {}
        cdef object key
        if self.empty(depth, b'}'):
            return result
        while True:
            if self.i >= self.n or self.p[self.i] != b'"':
                raise _NotPlain
            key = self.string()
            self.skip_space()
            if self.i >= self.n or self.p[self.i] != b':':
                raise _NotPlain
            self.i += 1
            self.skip_space()
            PyDict_SetItem(result, key, self.value(depth))
            if self.closed(b'}'):
                return result

    cdef object sequence(self, int depth):
        cdef list result = []
        if self.empty(depth, b']'):
            return result
        while True:
            PyList_Append(result, self.value(depth))
            if self.closed(b']'):
                return result

    cdef bint empty(self, int depth, unsigned char bracket) except -1:
        """At an opening bracket: step in; True past ``bracket`` when the container is empty."""
        if depth > DEPTH_LIMIT:
            raise _NotPlain
        self.i += 1
        self.skip_space()
        if self.i < self.n and self.p[self.i] == bracket:
            self.i += 1
            return True
        return False

    cdef bint closed(self, unsigned char bracket) except -1:
        """After an item: True past the closing ``bracket``, False past a comma (more follow)."""
        self.skip_space()
        if self.i >= self.n:
            raise _NotPlain
        if self.p[self.i] == b',':
            self.i += 1
            self.skip_space()
            return False
        if self.p[self.i] == bracket:
            self.i += 1
            return True
        raise _NotPlain

    cdef object number(self):
        cdef Py_ssize_t start = self.i, digits_from, k
        cdef bint negative = False, fraction = False
        cdef unsigned long long whole = 0, digit
        cdef char text[40]
        cdef char* end
        cdef double parsed
        if self.p[self.i] == b'-':
            negative = True
            self.i += 1
        digits_from = self.i
        if self.i >= self.n or not (48 <= self.p[self.i] <= 57):
            raise _NotPlain
        if self.p[self.i] == b'0':
            self.i += 1
        else:
            while self.i < self.n and 48 <= self.p[self.i] <= 57:
                self.i += 1
        if self.i < self.n and self.p[self.i] == b'.':
            fraction = True
            self.i += 1
            if self.i >= self.n or not (48 <= self.p[self.i] <= 57):
                raise _NotPlain
            while self.i < self.n and 48 <= self.p[self.i] <= 57:
                self.i += 1
        if self.i < self.n and (self.p[self.i] == b'e' or self.p[self.i] == b'E'):
            fraction = True
            self.i += 1
            if self.i < self.n and (self.p[self.i] == b'+' or self.p[self.i] == b'-'):
                self.i += 1
            if self.i >= self.n or not (48 <= self.p[self.i] <= 57):
                raise _NotPlain
            while self.i < self.n and 48 <= self.p[self.i] <= 57:
                self.i += 1
        if not fraction:
            # integers as orjson reads them: int within i64/u64, past that a float (left to it)
            if self.i - digits_from > 20:
                raise _NotPlain
            for k in range(digits_from, self.i):
                digit = self.p[k] - 48
                if whole > (U64_MAX - digit) // 10:
                    raise _NotPlain
                whole = whole * 10 + digit
            if not negative:
                return whole
            if whole > I64_MIN_MAGNITUDE:
                raise _NotPlain
            return -<long long>(whole - 1) - 1
        if self.i - start >= 40:
            raise _NotPlain
        memcpy(text, self.p + start, self.i - start)
        text[self.i - start] = 0
        parsed = PyOS_string_to_double(text, &end, NULL)
        if end != text + (self.i - start) or not isfinite(parsed):
            raise _NotPlain
        return parsed

    cdef object string(self):
        """The string whose opening quote is at ``i``; ``i`` ends after its closing quote."""
        cdef Py_ssize_t start = self.i + 1, k
        cdef bint ascii = True
        cdef unsigned char c
        k = start
        while k < self.n:
            c = self.p[k]
            if c == b'"':
                break
            if c == b'\\':
                return self.escaped_string(start)
            if c < 0x20:
                raise _NotPlain
            if c >= 0x80:
                ascii = False
            k += 1
        else:
            raise _NotPlain
        self.i = k + 1
        if ascii:
            return PyUnicode_DecodeASCII(<const char*>self.p + start, k - start, NULL)
        try:
            return PyUnicode_DecodeUTF8(<const char*>self.p + start, k - start, NULL)
        except UnicodeDecodeError:
            raise _NotPlain

    cdef object escaped_string(self, Py_ssize_t start):
        cdef Py_ssize_t k = start, w = 0
        cdef unsigned char c
        cdef unsigned int code, low
        cdef char* out
        # an escape never writes more bytes than it reads: the raw length bounds the output
        self.reserve(self.n - start)
        out = self.scratch
        while True:
            if k >= self.n:
                raise _NotPlain
            c = self.p[k]
            if c == b'"':
                break
            if c < 0x20:
                raise _NotPlain
            if c != b'\\':
                out[w] = <char>c
                w += 1
                k += 1
                continue
            if k + 1 >= self.n:
                raise _NotPlain
            c = self.p[k + 1]
            k += 2
            if c == b'"' or c == b'\\' or c == b'/':
                out[w] = <char>c
            elif c == b'n':
                out[w] = b'\n'
            elif c == b't':
                out[w] = b'\t'
            elif c == b'r':
                out[w] = b'\r'
            elif c == b'b':
                out[w] = b'\b'
            elif c == b'f':
                out[w] = b'\f'
            elif c == b'u':
                code = self.hex4(k)
                k += 4
                if 0xDC00 <= code <= 0xDFFF:
                    raise _NotPlain
                if 0xD800 <= code <= 0xDBFF:
                    if k + 1 >= self.n or self.p[k] != b'\\' or self.p[k + 1] != b'u':
                        raise _NotPlain
                    low = self.hex4(k + 2)
                    if not (0xDC00 <= low <= 0xDFFF):
                        raise _NotPlain
                    k += 6
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                w = _put_utf8(out, w, code)
                continue
            else:
                raise _NotPlain
            w += 1
        self.i = k + 1
        try:
            return PyUnicode_DecodeUTF8(out, w, NULL)
        except UnicodeDecodeError:
            raise _NotPlain

    cdef unsigned int hex4(self, Py_ssize_t k) except? 0xFFFFFFFF:
        cdef unsigned int code = 0
        cdef int digit, j
        if self.n - k < 4:
            raise _NotPlain
        for j in range(4):
            digit = _hex(self.p[k + j])
            if digit < 0:
                raise _NotPlain
            code = (code << 4) | digit
        return code

    cdef int reserve(self, Py_ssize_t size) except -1:
        if size <= self.scratch_size:
            return 0
        return _resize(&self.scratch, &self.scratch_size, size)


cdef inline Py_ssize_t _put_utf8(char* out, Py_ssize_t w, unsigned int code) noexcept:
    if code < 0x80:
        out[w] = <char>code
        return w + 1
    if code < 0x800:
        out[w] = <char>(0xC0 | (code >> 6))
        out[w + 1] = <char>(0x80 | (code & 0x3F))
        return w + 2
    if code < 0x10000:
        out[w] = <char>(0xE0 | (code >> 12))
        out[w + 1] = <char>(0x80 | ((code >> 6) & 0x3F))
        out[w + 2] = <char>(0x80 | (code & 0x3F))
        return w + 3
    out[w] = <char>(0xF0 | (code >> 18))
    out[w + 1] = <char>(0x80 | ((code >> 12) & 0x3F))
    out[w + 2] = <char>(0x80 | ((code >> 6) & 0x3F))
    out[w + 3] = <char>(0x80 | (code & 0x3F))
    return w + 4


def loads(data):
    """The document in ``data`` (any bytes-like object), or ``NOT_PLAIN``."""
    cdef Py_buffer view
    cdef _Reader reader
    if isinstance(data, str):
        return NOT_PLAIN
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except TypeError:
        return NOT_PLAIN
    reader = _Reader.__new__(_Reader)
    try:
        reader.p = <const unsigned char*>view.buf
        reader.n = view.len
        reader.skip_space()
        result = reader.value(0)
        reader.skip_space()
        if reader.i != reader.n:
            return NOT_PLAIN
        return result
    except _NotPlain:
        return NOT_PLAIN
    finally:
        PyBuffer_Release(&view)


# ---------------------------------------------------------------------------------------------
# writing

cdef const char* _HEX = b"0123456789abcdef"
cdef char _SHORT_ESCAPES[128]          # the letter after the backslash, 0: written as \u00XX
for _c in range(128):
    _SHORT_ESCAPES[_c] = 0
for _c, _letter in zip(b'"\\\n\t\r\b\f', b'"\\ntrbf'):
    _SHORT_ESCAPES[_c] = _letter
del _c, _letter


cdef class _Writer:
    cdef char* buf
    cdef Py_ssize_t size, capacity

    def __dealloc__(self):
        if self.buf != NULL:
            PyMem_Free(self.buf)

    cdef inline int room(self, Py_ssize_t more) except -1:
        cdef Py_ssize_t wanted
        if more <= self.capacity - self.size:
            return 0
        if more > PY_SSIZE_T_MAX - 64 - self.size:  # the text could not be one bytes object
            raise MemoryError()
        wanted = self.size + more + 64
        if self.capacity <= PY_SSIZE_T_MAX // 2 and self.capacity * 2 > wanted:
            wanted = self.capacity * 2
        return _resize(&self.buf, &self.capacity, wanted)

    cdef inline int put(self, const char* data, Py_ssize_t size) except -1:
        self.room(size)
        memcpy(self.buf + self.size, data, size)
        self.size += size
        return 0

    cdef inline int byte(self, char c) except -1:
        self.room(1)
        self.buf[self.size] = c
        self.size += 1
        return 0

    cdef int value(self, object obj, int depth) except -1:
        cdef type kind = type(obj)
        cdef Py_ssize_t pos = 0, k, n
        cdef PyObject* key
        cdef PyObject* item
        cdef bint first
        if kind is str:
            return self.string(obj)
        if kind is int:
            return self.integer(obj)
        if kind is float:
            return self.real(PyFloat_AS_DOUBLE(obj))
        if obj is None:
            return self.put(b"null", 4)
        if obj is True:
            return self.put(b"true", 4)
        if obj is False:
            return self.put(b"false", 5)
        if depth >= DEPTH_LIMIT:
            raise _NotPlain
        if kind is dict:
            self.byte(b'{')
            first = True
            while PyDict_Next(obj, &pos, &key, &item):
                if type(<object>key) is not str:
                    raise _NotPlain
                if not first:
                    self.byte(b',')
                first = False
                self.string(<object>key)
                self.byte(b':')
                self.value(<object>item, depth + 1)
            return self.byte(b'}')
        if kind is list or kind is tuple:
            self.byte(b'[')
            n = len(obj)
            for k in range(n):
                if k:
                    self.byte(b',')
                self.value(obj[k], depth + 1)
            return self.byte(b']')
        raise _NotPlain

    cdef int string(self, str text) except -1:
        cdef Py_ssize_t size, k, plain_from = 0
        cdef const char* data
        cdef unsigned char c
        try:
            data = PyUnicode_AsUTF8AndSize(text, &size)
        except UnicodeEncodeError:     # lone surrogates: orjson refuses them
            raise _NotPlain
        self.byte(b'"')
        for k in range(size):
            c = <unsigned char>data[k]
            if c >= 0x20 and c != b'"' and c != b'\\':
                continue
            self.put(data + plain_from, k - plain_from)
            plain_from = k + 1
            self.byte(b'\\')
            if _SHORT_ESCAPES[c]:           # \" \\ \n \t \r \b \f
                self.byte(_SHORT_ESCAPES[c])
            else:                           # other control characters: \u00XX
                self.put(b"u00", 3)
                self.byte(_HEX[c >> 4])
                self.byte(_HEX[c & 15])
        self.put(data + plain_from, size - plain_from)
        return self.byte(b'"')

    cdef int integer(self, object number) except -1:
        cdef int overflow = 0
        cdef long long signed_value = PyLong_AsLongLongAndOverflow(number, &overflow)
        cdef unsigned long long value
        cdef char digits[24]
        cdef int k = 24
        cdef bint negative = False
        if overflow == 0:
            negative = signed_value < 0
            value = <unsigned long long>(-(signed_value + 1)) + 1 if negative else <unsigned long long>signed_value
        elif overflow > 0:
            try:
                value = PyLong_AsUnsignedLongLong(number)
            except OverflowError:   # past 64 bits: orjson refuses it
                raise _NotPlain
        else:
            raise _NotPlain
        while True:
            k -= 1
            digits[k] = <char>(48 + value % 10)
            value //= 10
            if value == 0:
                break
        if negative:
            k -= 1
            digits[k] = b'-'
        return self.put(digits + k, 24 - k)

    cdef int real(self, double number) except -1:
        """repr() of the float, as orjson writes it: ``e-05`` → ``e-5``; 1e-5 ≤ |x| < 1e-4 in full."""
        cdef char* text
        cdef Py_ssize_t size, e = -1, k, mantissa_start
        cdef char out[40]
        cdef Py_ssize_t w = 0
        if not isfinite(number):
            return self.put(b"null", 4)
        text = PyOS_double_to_string(number, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
        try:
            size = 0
            while text[size] != 0:
                if text[size] == b'e':
                    e = size
                size += 1
            if e < 0 or text[e + 1] != b'-':      # no exponent, or a positive one: as repr
                return self.put(text, size)
            if size >= 32:
                raise _NotPlain
            if text[e + 2] == b'0' and text[e + 3] == b'5' and e + 4 == size:
                # d.ddd e-05 → 0.0000dddd (the digits without their point)
                mantissa_start = 0
                if text[0] == b'-':
                    out[w] = b'-'
                    w += 1
                    mantissa_start = 1
                memcpy(out + w, b"0.0000", 6)
                w += 6
                for k in range(mantissa_start, e):
                    if text[k] != b'.':
                        out[w] = text[k]
                        w += 1
                return self.put(out, w)
            # d.ddd e-0N → d.ddd e-N
            memcpy(out, text, e + 2)
            w = e + 2
            k = e + 2
            while text[k] == b'0' and text[k + 1] != 0:
                k += 1
            while text[k] != 0:
                out[w] = text[k]
                w += 1
                k += 1
            return self.put(out, w)
        finally:
            PyMem_Free_str(text)


def dumps(obj):
    """``orjson.dumps(obj)`` for a plain ``obj``, or ``None``."""
    cdef _Writer writer = _Writer.__new__(_Writer)
    try:
        writer.value(obj, 0)
    except _NotPlain:
        return None
    return PyBytes_FromStringAndSize(writer.buf, writer.size)
