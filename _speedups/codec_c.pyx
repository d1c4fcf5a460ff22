# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled twin of ``lite_serving/codecs/codec_py.py`` (numpy arrays to MessagePack, BYTES elements).

Same public API, same bytes, results and messages. The readable reference is
codec_py; this module walks the array's memory through the buffer protocol
(no numpy import, no numpy headers: any strides, either byte order) and writes
each element's MessagePack form in one pass, without the GIL for large arrays.

Where the two differ on purpose (not observable through results): integers
whose forms differ in size are written here directly, where codec_py hands
them to msgpack-python; both give msgpack-python's bytes.
"""

from cpython.buffer cimport (PyBUF_FORMAT, PyBUF_SIMPLE, PyBUF_STRIDES, PyBuffer_Release,
                             PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    bint PyBytes_CheckExact(object o)
    bint PyUnicode_CheckExact(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)
    const Py_ssize_t PY_SSIZE_T_MAX

cdef extern from "Python.h":
    # a new bytes object held by hand, so that it can be shrunk in place once written
    PyObject* new_bytes "PyBytes_FromStringAndSize" (const char* s, Py_ssize_t size) except NULL
    char* bytes_data "PyBytes_AS_STRING" (PyObject* o)
    int _PyBytes_Resize(PyObject** o, Py_ssize_t size) except -1

__all__ = ["pack_array", "split_length_prefixed", "join_length_prefixed", "split_map",
           "copy_out"]

cdef enum Kind:
    BOOL, SIGNED, UNSIGNED, HALF, FLOAT, DOUBLE

cdef const uint64_t U32_MAX = 0xFFFFFFFFULL
cdef const int64_t I32_MIN = -2147483648LL

cdef enum:
    NO_GIL_FROM = 4096   # elements: below this, releasing the GIL costs more than it gives
    QUIET = 0x00400000   # the quiet bit of a float32 NaN

cdef extern from *:
    """
    #if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define LS_NATIVE_BIG 1
    #else
    #define LS_NATIVE_BIG 0
    #endif
    static inline uint16_t ls_swap16(uint16_t v) { return (uint16_t)((v >> 8) | (v << 8)); }
    static inline uint32_t ls_swap32(uint32_t v) {
        return (v >> 24) | ((v >> 8) & 0xFF00u) | ((v << 8) & 0xFF0000u) | (v << 24);
    }
    static inline uint64_t ls_swap64(uint64_t v) {
        return ((uint64_t)ls_swap32((uint32_t)v) << 32) | ls_swap32((uint32_t)(v >> 32));
    }
    """
    bint NATIVE_BIG "LS_NATIVE_BIG"
    uint16_t swap16 "ls_swap16" (uint16_t v) noexcept nogil
    uint32_t swap32 "ls_swap32" (uint32_t v) noexcept nogil
    uint64_t swap64 "ls_swap64" (uint64_t v) noexcept nogil


cdef struct Walk:
    int kind
    int itemsize
    bint swap                  # the elements' bytes are not in this machine's order
    int ndim
    const Py_ssize_t* shape
    const Py_ssize_t* strides
    unsigned char* out         # where the next byte goes


# -- reading elements ---------------------------------------------------------------------------

cdef inline uint64_t load(const char* p, int size, bint swap) noexcept nogil:
    """The element at ``p`` as an unsigned integer of ``size`` bytes, in this machine's order."""
    cdef uint8_t v8
    cdef uint16_t v16
    cdef uint32_t v32
    cdef uint64_t v64
    if size == 1:
        memcpy(&v8, p, 1)
        return v8
    if size == 2:
        memcpy(&v16, p, 2)
        return swap16(v16) if swap else v16
    if size == 4:
        memcpy(&v32, p, 4)
        return swap32(v32) if swap else v32
    memcpy(&v64, p, 8)
    return swap64(v64) if swap else v64


cdef inline int64_t signed_value(uint64_t raw, int size) noexcept nogil:
    if size == 1:
        return <int64_t>(<signed char>raw)
    if size == 2:
        return <int64_t>(<short>raw)
    if size == 4:
        return <int64_t>(<int>raw)
    return <int64_t>raw


cdef inline uint32_t half_to_float_bits(uint32_t h) noexcept nogil:
    """float16 bits → the float32 bits of the same value (codec_py: ``astype(float32)``)."""
    cdef uint32_t sign = (h & 0x8000) << 16
    cdef uint32_t exponent = (h >> 10) & 0x1F
    cdef uint32_t mantissa = h & 0x3FF
    cdef int shift = 0
    if exponent == 0x1F:  # infinity, or NaN: payload kept, made quiet
        if mantissa:
            return sign | 0x7F800000 | (mantissa << 13) | QUIET
        return sign | 0x7F800000
    if exponent == 0:
        if mantissa == 0:
            return sign
        while not (mantissa & 0x400):  # subnormal: normalise
            mantissa <<= 1
            shift += 1
        return sign | (<uint32_t>(113 - shift) << 23) | ((mantissa & 0x3FF) << 13)
    return sign | ((exponent + 112) << 23) | (mantissa << 13)


# -- writing MessagePack ------------------------------------------------------------------------

cdef inline unsigned char* put_be(unsigned char* o, uint64_t v, int size) noexcept nogil:
    cdef int i
    for i in range(size):
        o[i] = <unsigned char>(v >> (8 * (size - 1 - i)))
    return o + size


cdef inline unsigned char* put_uint(unsigned char* o, uint64_t v) noexcept nogil:
    """codec_py._INT_FORMS, non-negative half."""
    if v <= 0x7F:
        o[0] = <unsigned char>v
        return o + 1
    if v <= 0xFF:
        o[0] = 0xCC
        return put_be(o + 1, v, 1)
    if v <= 0xFFFF:
        o[0] = 0xCD
        return put_be(o + 1, v, 2)
    if v <= U32_MAX:
        o[0] = 0xCE
        return put_be(o + 1, v, 4)
    o[0] = 0xCF
    return put_be(o + 1, v, 8)


cdef inline unsigned char* put_int(unsigned char* o, int64_t v) noexcept nogil:
    """codec_py._INT_FORMS, negative half (non-negative values go to put_uint)."""
    if v >= 0:
        return put_uint(o, <uint64_t>v)
    if v >= -0x20:
        o[0] = <unsigned char>(v & 0xFF)
        return o + 1
    if v >= -0x80:
        o[0] = 0xD0
        return put_be(o + 1, <uint64_t>v, 1)
    if v >= -0x8000:
        o[0] = 0xD1
        return put_be(o + 1, <uint64_t>v, 2)
    if v >= I32_MIN:
        o[0] = 0xD2
        return put_be(o + 1, <uint64_t>v, 4)
    o[0] = 0xD3
    return put_be(o + 1, <uint64_t>v, 8)


cdef inline Py_ssize_t header_size(Py_ssize_t n) noexcept nogil:
    if n < 16:
        return 1
    if n <= 0xFFFF:
        return 3
    return 5


cdef inline unsigned char* put_header(unsigned char* o, Py_ssize_t n) noexcept nogil:
    """codec_py.array_header (lengths past 2**32 - 1 were refused before)."""
    if n < 16:
        o[0] = <unsigned char>(0x90 | n)
        return o + 1
    if n <= 0xFFFF:
        o[0] = 0xDC
        return put_be(o + 1, <uint64_t>n, 2)
    o[0] = 0xDD
    return put_be(o + 1, <uint64_t>n, 4)


cdef void put_row(Walk* w, const char* p, Py_ssize_t n, Py_ssize_t stride) noexcept nogil:
    """Write the MessagePack of ``n`` elements from ``p``, ``stride`` bytes apart."""
    cdef Py_ssize_t i
    cdef unsigned char* o = w.out
    cdef int kind = w.kind, size = w.itemsize
    cdef bint swap = w.swap
    if kind == FLOAT:
        for i in range(n):
            o[0] = 0xCA
            o = put_be(o + 1, load(p + i * stride, 4, swap), 4)
    elif kind == DOUBLE:
        for i in range(n):
            o[0] = 0xCB
            o = put_be(o + 1, load(p + i * stride, 8, swap), 8)
    elif kind == HALF:
        for i in range(n):
            o[0] = 0xCA
            o = put_be(o + 1, half_to_float_bits(<uint32_t>load(p + i * stride, 2, swap)), 4)
    elif kind == BOOL:
        for i in range(n):
            o[0] = 0xC3 if p[i * stride] else 0xC2
            o += 1
    elif kind == SIGNED:
        for i in range(n):
            o = put_int(o, signed_value(load(p + i * stride, size, swap), size))
    else:
        for i in range(n):
            o = put_uint(o, load(p + i * stride, size, swap))
    w.out = o


cdef void walk(Walk* w, int depth, const char* p) noexcept nogil:
    """Headers and elements of the sub-array at ``p`` and ``depth``, in row-major order."""
    cdef Py_ssize_t i, n, stride
    if depth == w.ndim:  # a 0-d array: its one element (an empty array never gets here)
        put_row(w, p, 1, 0)
        return
    n = w.shape[depth]
    stride = w.strides[depth]
    w.out = put_header(w.out, n)
    if depth == w.ndim - 1:
        put_row(w, p, n, stride)
        return
    for i in range(n):
        walk(w, depth + 1, p + i * stride)


cdef int element_kind(const char* fmt, Py_ssize_t itemsize, Walk* w):
    """Read a buffer format (struct module syntax, one element); 0 when it is one we write."""
    cdef char order = fmt[0]
    cdef bint big = NATIVE_BIG
    if order == b'<' or order == b'>' or order == b'!' or order == b'=' or order == b'@':
        big = (order == b'>' or order == b'!') or ((order == b'=' or order == b'@') and NATIVE_BIG)
        fmt += 1
    if fmt[0] == 0 or fmt[1] != 0:
        return -1
    w.swap = big != NATIVE_BIG
    w.itemsize = <int>itemsize
    c = fmt[0]
    if c == b'?' and itemsize == 1:
        w.kind = BOOL
    elif c in b'bhilqn' and itemsize in (1, 2, 4, 8):
        w.kind = SIGNED
    elif c in b'BHILQN' and itemsize in (1, 2, 4, 8):
        w.kind = UNSIGNED
    elif c == b'e' and itemsize == 2:
        w.kind = HALF
    elif c == b'f' and itemsize == 4:
        w.kind = FLOAT
    elif c == b'd' and itemsize == 8:
        w.kind = DOUBLE
    else:
        return -1
    return 0


cdef inline bint add_to(Py_ssize_t* total, Py_ssize_t more) noexcept nogil:
    """``total += more`` for sizes (both >= 0); False, ``total`` unchanged, past PY_SSIZE_T_MAX."""
    if more > PY_SSIZE_T_MAX - total[0]:
        return False
    total[0] += more
    return True


cdef inline bint multiply(Py_ssize_t* total, Py_ssize_t by) noexcept nogil:
    """``total *= by`` for sizes (both >= 0); False, ``total`` unchanged, past PY_SSIZE_T_MAX."""
    if by != 0 and total[0] > PY_SSIZE_T_MAX // by:
        return False
    total[0] *= by
    return True


cdef bint packed_bound(const Py_ssize_t* shape, int ndim, Py_ssize_t per_element,
                       Py_ssize_t* bound) noexcept:
    """The most bytes the MessagePack of an array of ``shape`` takes, each element at most
    ``per_element``: every array header of a C-order walk, then the elements. False when that
    is past PY_SSIZE_T_MAX (codec_py.packed_bound computes the same number with Python ints)."""
    cdef Py_ssize_t total = 0, count = 1, headers
    cdef int depth
    for depth in range(ndim):
        headers = count
        if not (multiply(&headers, header_size(shape[depth])) and add_to(&total, headers)):
            return False
        if shape[depth] == 0:
            count = 0  # no sub-array below this depth: nothing more to write
            break
        if not multiply(&count, shape[depth]):
            return False  # the next depth's headers, or the elements, take more still
    if not (multiply(&count, per_element) and add_to(&total, count)):
        return False
    bound[0] = total
    return True


cdef str too_large(shape):
    """codec_py's message for an array whose MessagePack no bytes object could hold."""
    return (f"the MessagePack of an array of shape {tuple(shape)} would take more than "
            f"{PY_SSIZE_T_MAX} bytes, the most a bytes object holds on this platform")


def pack_array(array):
    """MessagePack bytes of a numpy array, as codec_py.pack_array; None for other dtypes."""
    cdef Py_buffer view
    cdef Walk w
    cdef Py_ssize_t count = 1, bound, used
    cdef int depth
    cdef PyObject* packed = NULL
    try:
        PyObject_GetBuffer(array, &view, PyBUF_STRIDES | PyBUF_FORMAT)
    except (BufferError, TypeError, ValueError):
        return None  # datetime and other dtypes numpy does not export
    try:
        if view.format == NULL or element_kind(view.format, view.itemsize, &w) != 0:
            return None
        w.ndim = view.ndim
        w.shape = view.shape
        w.strides = view.strides
        for depth in range(view.ndim):
            if <uint64_t>view.shape[depth] > U32_MAX:
                raise ValueError(f"an array dimension of {view.shape[depth]} is longer than "
                                 "MessagePack allows (2**32 - 1)")
            if not multiply(&count, view.shape[depth]):  # a broadcast view can be that long
                count = PY_SSIZE_T_MAX  # packed_bound refuses it, unless a later dimension is 0
        # the most an element can take: integers are shrunk to their form once written
        if w.kind == BOOL:
            bound = 1
        elif w.kind == DOUBLE:
            bound = 9
        elif w.kind == SIGNED or w.kind == UNSIGNED:
            bound = 1 + w.itemsize
        else:
            bound = 5
        if not packed_bound(view.shape, view.ndim, bound, &bound):
            raise OverflowError(too_large([view.shape[depth] for depth in range(view.ndim)]))
        packed = new_bytes(NULL, bound)
        w.out = <unsigned char*>bytes_data(packed)
        if count >= NO_GIL_FROM:
            with nogil:
                walk(&w, 0, <const char*>view.buf)
        else:
            walk(&w, 0, <const char*>view.buf)
        used = <Py_ssize_t>(w.out - <unsigned char*>bytes_data(packed))
        if used != bound:
            _PyBytes_Resize(&packed, used)  # on failure it frees packed and sets it to NULL
        result = <object>packed
        return result
    finally:
        Py_XDECREF(packed)
        PyBuffer_Release(&view)


def split_length_prefixed(data, bint decode=False):
    """BYTES elements (4-byte little-endian length, then the bytes) → a list, as codec_py."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t position = 0, end
    cdef uint32_t length
    cdef list items = []
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        p = <const unsigned char*>view.buf
        end = view.len
        while position < end:
            if end - position < 4:
                raise ValueError("ends inside an element length")
            length = (<uint32_t>p[position] | (<uint32_t>p[position + 1] << 8)
                      | (<uint32_t>p[position + 2] << 16) | (<uint32_t>p[position + 3] << 24))
            position += 4
            if length > <size_t>(end - position):
                raise ValueError(f"has an element of {length} bytes that runs past its end")
            if decode:
                try:
                    items.append(PyUnicode_DecodeUTF8(<const char*>p + position, length, NULL))
                except UnicodeDecodeError:
                    raise ValueError(f"has element {len(items)}, which is not UTF-8 text") from None
            else:
                items.append(PyBytes_FromStringAndSize(<const char*>p + position, length))
            position += length
        return items
    finally:
        PyBuffer_Release(&view)


cdef bytes element_bytes(item):
    """codec_py._element_bytes: bytes-likes as their bytes, anything else as its str in UTF-8."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    return str(item).encode("utf-8")


def join_length_prefixed(items):
    """A sequence of bytes or str (as UTF-8) → BYTES elements, each length-prefixed, as codec_py."""
    cdef list encoded = []
    cdef Py_ssize_t total = 0, size
    cdef const char* data
    cdef unsigned char* o
    cdef bytes result
    for item in items:
        if PyUnicode_CheckExact(item):
            PyUnicode_AsUTF8AndSize(item, &size)  # UTF-8 kept by the str for the copy below
        else:
            if not PyBytes_CheckExact(item):
                item = element_bytes(item)
            size = PyBytes_GET_SIZE(item)
        if <uint64_t>size > U32_MAX:
            raise ValueError(f"an element of {size} bytes is longer than its 4-byte length allows")
        encoded.append(item)
        if not add_to(&total, 4) or not add_to(&total, size):
            raise OverflowError(f"the elements would take more than {PY_SSIZE_T_MAX} bytes, "
                                "the most a bytes object holds on this platform")
    result = PyBytes_FromStringAndSize(NULL, total)
    o = <unsigned char*>PyBytes_AS_STRING(result)
    for item in encoded:
        if PyUnicode_CheckExact(item):
            data = PyUnicode_AsUTF8AndSize(item, &size)
        else:
            data = PyBytes_AS_STRING(item)
            size = PyBytes_GET_SIZE(item)
        o[0] = <unsigned char>size
        o[1] = <unsigned char>(size >> 8)
        o[2] = <unsigned char>(size >> 16)
        o[3] = <unsigned char>(size >> 24)
        memcpy(o + 4, data, size)
        o += 4 + size
    return result


# -- the large values of a MessagePack body: codec_py.split_map and copy_out ---------------------

cdef extern from *:
    """
    #include <stdint.h>
    #if defined(__linux__)
    #include <sys/mman.h>
    #include <unistd.h>
    #endif
    /* Ask for huge pages over the whole pages of [p, p + n): one page fault per 2 MiB instead
       of per 4 KiB where the kernel offers them on request (transparent huge pages "madvise"). */
    static void ls_advise_huge(char* p, Py_ssize_t n) {
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t first = ((uintptr_t)p + page - 1) & ~(page - 1);
        uintptr_t last = ((uintptr_t)p + (uintptr_t)n) & ~(page - 1);
        if (last > first) {
            (void)madvise((void*)first, last - first, MADV_HUGEPAGE);  /* advice: failure is fine */
        }
    #else
        (void)p; (void)n;
    #endif
    }
    """
    void advise_huge "ls_advise_huge" (char* p, Py_ssize_t n) noexcept nogil

cdef enum:
    WALK_LIMIT = 10000
    DEPTH_LIMIT = 32
    OTHER = 0
    BIN = 1
    EXT = 2
    HUGE_FROM = 4 * 1024 * 1024   # copies this large ask for huge pages


cdef struct Head:
    Py_ssize_t start      # where the payload starts
    Py_ssize_t length     # payload bytes
    Py_ssize_t items      # values it contains
    int kind


cdef inline bint be(const unsigned char* p, int size, Py_ssize_t* out) noexcept nogil:
    """The big-endian count of ``size`` (at most 4) bytes; False when it is over what a body in
    this process can hold, so that ``2 * n`` items and ``n + 16`` bytes stay within
    Py_ssize_t (on a 32-bit host a 4-byte count reaches 2**32 - 1, past PY_SSIZE_T_MAX)."""
    cdef unsigned long long n = 0
    cdef int i
    for i in range(size):
        n = (n << 8) | p[i]
    if n > <unsigned long long>((PY_SSIZE_T_MAX - 16) // 2):
        return False
    out[0] = <Py_ssize_t>n
    return True


cdef bint read_head(const unsigned char* raw, Py_ssize_t pos, Py_ssize_t end, Head* h) noexcept nogil:
    """codec_py._head: False when the head is cut short or is 0xC1."""
    cdef unsigned char tag = raw[pos]
    cdef int size = 0, per = 0, kind = OTHER
    cdef Py_ssize_t fixed = 0, count
    h.items = 0
    h.length = 0
    h.kind = OTHER
    h.start = pos + 1
    if tag < 0x80 or tag >= 0xE0:
        return True
    if tag < 0x90:
        h.items = 2 * (tag & 0x0F)
        return True
    if tag < 0xA0:
        h.items = tag & 0x0F
        return True
    if tag < 0xC0:
        h.length = tag & 0x1F
        return True
    if tag == 0xC0 or tag == 0xC2 or tag == 0xC3:
        return True
    if tag == 0xC1:
        return False
    if tag <= 0xC6:
        size, kind = 1 << (tag - 0xC4), BIN
    elif tag <= 0xC9:
        size, kind = 1 << (tag - 0xC7), EXT
    elif tag <= 0xCB:
        fixed = 4 if tag == 0xCA else 8
    elif tag <= 0xD3:
        fixed = 1 << ((tag - 0xCC) & 3)
    elif tag <= 0xD8:
        fixed, kind = 1 << (tag - 0xD4), EXT
    elif tag <= 0xDB:
        size = 1 << (tag - 0xD9)
    elif tag <= 0xDD:
        size, per = (2 if tag == 0xDC else 4), 1
    else:
        size, per = (2 if tag == 0xDE else 4), 2
    h.start = pos + 1 + size + (1 if kind == EXT else 0)
    if h.start > end:
        return False
    if not be(raw + pos + 1, size, &count):   # a count no body here can hold: cut short
        return False
    if per:
        h.items = per * count
    else:
        h.length = fixed + count
        h.kind = kind
    return True


cdef Py_ssize_t skip(const unsigned char* raw, Py_ssize_t pos, Py_ssize_t end,
                     Py_ssize_t* walked) noexcept nogil:
    """codec_py._skip: the offset past the value at pos, or -1."""
    cdef Py_ssize_t pending[DEPTH_LIMIT + 1]
    cdef int depth = 1
    cdef Head h
    pending[0] = 1
    while depth:
        if not pending[depth - 1]:
            depth -= 1
            continue
        pending[depth - 1] -= 1
        walked[0] += 1
        if walked[0] > WALK_LIMIT or pos >= end:
            return -1
        if not read_head(raw, pos, end, &h):
            return -1
        if h.length > end - h.start:
            return -1
        pos = h.start + h.length
        if h.items:
            if depth > DEPTH_LIMIT:
                return -1
            pending[depth] = h.items
            depth += 1
    return pos


def split_map(data, Py_ssize_t large):
    """codec_py.split_map: the entries of the map ``data`` holds, when it has a value of
    ``large`` bytes or more at its top; else None."""
    cdef Py_buffer view
    cdef const unsigned char* raw
    cdef Py_ssize_t end, pos, key, value, walked = 1, n, i
    cdef Head h
    cdef bint found = False
    cdef list entries = []
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        raw = <const unsigned char*>view.buf
        end = view.len
        if not end or (raw[0] != 0xDE and raw[0] != 0xDF and raw[0] >> 4 != 0x8):
            return None
        if not read_head(raw, 0, end, &h):
            return None
        pos = h.start
        n = h.items // 2
        for i in range(n):
            key = pos
            pos = skip(raw, pos, end, &walked)
            if pos < 0 or pos >= end:
                return None
            if not read_head(raw, pos, end, &h):
                return None
            if ((h.kind == BIN or h.kind == EXT and raw[h.start - 1] < 0x80)
                    and h.length >= large):
                if h.length > end - h.start:
                    return None
                found = True
                entries.append((key, pos, h.start + h.length, h.start,
                                raw[h.start - 1] if h.kind == EXT else -1))
                pos = h.start + h.length
                walked += 1
            else:
                value = pos
                pos = skip(raw, pos, end, &walked)
                if pos < 0:
                    return None
                entries.append((key, value, pos, -1, -1))
        if pos != end or not found:
            return None
        return entries
    finally:
        PyBuffer_Release(&view)


def copy_out(data, Py_ssize_t start, Py_ssize_t end):
    """codec_py.copy_out: ``data[start:end]`` as bytes; a large copy into memory that asks for
    huge pages (a bytes object this large is mapped afresh by malloc: its pages are first
    touched by this copy, 512 times fewer faults with huge pages), without the GIL."""
    cdef Py_buffer view
    cdef bytes out
    cdef char* o
    cdef const char* p
    cdef Py_ssize_t n
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if start < 0 or end > view.len or start > end:
            raise ValueError(f"{start}:{end} is not within {view.len} bytes")
        n = end - start
        out = PyBytes_FromStringAndSize(NULL, n)
        o = PyBytes_AS_STRING(out)
        p = <const char*>view.buf + start
        with nogil:
            if n >= HUGE_FROM:
                advise_huge(o, n)
            memcpy(o, p, n)
        return out
    finally:
        PyBuffer_Release(&view)
