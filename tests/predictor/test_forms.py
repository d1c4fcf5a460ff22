"""Forms through the Flask facade: urlencoded and multipart bodies, uploads, spooling, limits, errors.

A predictor that asks for ``request`` reads ``request.form`` and ``request.files`` as under Flask.
Multipart bodies larger than ``--spool-size`` go to a temporary file as they arrive and their file
parts are read from it, so a big upload never sits in the server's memory.
"""

import base64
import hashlib
import threading

import pytest

from lite_serving.http.multipart import MAX_FIELD_SIZE, MAX_PARTS
from support.http_client import Connection, post, request
from support.servers import kill, module_server, start
from support.wire import rss_kib

SPOOL = 65536

SOURCE = r'''
import base64
import hashlib
import os
import tempfile

import openbayes_serving as serv


def rss_anon_kb():
    """Anonymous resident memory of this process (heap, not file pages), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return -1


def b64(data):
    return base64.b64encode(data).decode("ascii")


def describe_file(f):
    first = f.read(3)
    rest = f.read()
    f.seek(0)                         # FileStorage hands seek/tell/readline to its stream
    line = f.readline()
    position = f.tell()
    f.stream.seek(0)
    via_stream = f.stream.read()
    with tempfile.TemporaryDirectory() as spool:
        path = os.path.join(spool, "saved")
        f.save(path)
        with open(path, "rb") as saved:
            saved_bytes = saved.read()
    return {"name": f.name, "filename": f.filename, "content_type": f.content_type,
            "mimetype": f.mimetype, "mimetype_params": dict(f.mimetype_params),
            "read": b64(first + rest), "stream": b64(via_stream), "saved": b64(saved_bytes),
            "readline": b64(line), "tell": position, "truthy": bool(f)}


class Predictor:
    def predict(self, request):
        what = request.args.get("what", "describe")
        if what == "describe":
            files = [[key, describe_file(f)] for key in request.files
                     for f in request.files.getlist(key)]
            return {"form": request.form.to_dict(flat=False), "files": files}
        if what == "hash":
            f = request.files["upload"]
            digest, size, peak = hashlib.sha256(), 0, rss_anon_kb()
            for turn in range(1_000_000):  # bounded; ends at the end of the file
                piece = f.stream.read(65536)
                if not piece:
                    break
                digest.update(piece)
                size += len(piece)
                if turn % 32 == 0:
                    peak = max(peak, rss_anon_kb())
            saved = hashlib.sha256()
            with tempfile.TemporaryDirectory() as spool:
                path = os.path.join(spool, "saved")
                f.save(path)
                with open(path, "rb") as copy:
                    for _ in range(1_000_000):
                        piece = copy.read(1 << 20)
                        if not piece:
                            break
                        saved.update(piece)
            peak = max(peak, rss_anon_kb())
            return {"sha256": digest.hexdigest(), "size": size, "saved_sha256": saved.hexdigest(),
                    "form": request.form.to_dict(flat=False), "rss_anon_peak_kb": peak}
        if what == "count":
            return {"fields": sum(len(v) for v in request.form.to_dict(flat=False).values()),
                    "files": sum(len(request.files.getlist(k)) for k in request.files)}
        return {"unknown": what}


if __name__ == "__main__":
    serv.run(Predictor)
'''


server = module_server("forms", SOURCE, "--spool-size", str(SPOOL))


def part(name, content, filename=None, content_type=None, disposition=None):
    """One multipart part as (header lines, content)."""
    if disposition is None:
        disposition = b'form-data; name="%s"' % name.encode()
        if filename is not None:
            disposition += b'; filename="%s"' % filename.encode()
    lines = [b"Content-Disposition: " + disposition]
    if content_type is not None:
        lines.append(b"Content-Type: " + content_type.encode())
    return lines, content


def multipart(parts, boundary=b"----lite-form-7MA4YWxkTrZu0gW", preamble=b""):
    body = preamble
    for lines, content in parts:
        body += b"--" + boundary + b"\r\n" + b"".join(line + b"\r\n" for line in lines)
        body += b"\r\n" + content + b"\r\n"
    return body + b"--" + boundary + b"--\r\n"


def content_type(boundary=b"----lite-form-7MA4YWxkTrZu0gW"):
    return "multipart/form-data; boundary=" + boundary.decode()


def describe(server, body, ctype=None, what="describe"):
    resp = post(server, body, ctype or content_type(), target=f"/?what={what}")
    assert resp.status == 200, resp
    return resp.json()


def decoded(file_info, key):
    return base64.b64decode(file_info[key])


# -- urlencoded -------------------------------------------------------------

def test_urlencoded_body_is_the_form(server):
    got = describe(server, b"a=1&a=2&b=x+y&c=%E2%9C%93&empty=&flag&plus=%2B",
                   "application/x-www-form-urlencoded")
    assert got == {"form": {"a": ["1", "2"], "b": ["x y"], "c": ["\u2713"], "empty": [""],
                            "flag": [""], "plus": ["+"]},
                   "files": []}


def test_urlencoded_with_charset_parameter(server):
    got = describe(server, b"name=J%C3%B6rg", "application/x-www-form-urlencoded; charset=UTF-8")
    assert got["form"] == {"name": ["J\u00f6rg"]}


# -- multipart --------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\r\n--not-the-boundary\r\n\r\n" + b"\x00" * 100


def test_multipart_fields_and_files(server):
    body = multipart([
        part("title", "caf\u00e9 \u2713".encode()),
        part("upload", PNG, filename="pixel.png", content_type="image/png"),
        part("notes", b"line 1\r\nline 2\r\n", filename="notes.txt",
             content_type="text/plain; charset=utf-8"),
        part("upload", b"", filename="empty.bin", content_type="application/octet-stream"),
        part("title", b"second"),
        part("nofile", b"", filename=""),
        part("plain", b"no content type", filename="x.dat"),
    ])
    got = describe(server, body)
    assert got["form"] == {"title": ["caf\u00e9 \u2713", "second"]}
    files = got["files"]
    assert [(key, f["name"], f["filename"]) for key, f in files] == [
        ("upload", "upload", "pixel.png"), ("upload", "upload", "empty.bin"),
        ("notes", "notes", "notes.txt"), ("nofile", "nofile", ""), ("plain", "plain", "x.dat")]
    by_name = {f["filename"]: f for _, f in files}
    expected = {"pixel.png": PNG, "empty.bin": b"", "notes.txt": b"line 1\r\nline 2\r\n",
                "": b"", "x.dat": b"no content type"}
    for filename, content in expected.items():
        info = by_name[filename]
        assert decoded(info, "read") == content, filename
        assert decoded(info, "stream") == content, filename
        assert decoded(info, "saved") == content, filename
        first_line = content.split(b"\n", 1)[0] + (b"\n" if b"\n" in content else b"")
        assert decoded(info, "readline") == first_line, filename
        assert info["tell"] == len(first_line), filename
    assert by_name["pixel.png"]["content_type"] == "image/png"
    assert by_name["pixel.png"]["mimetype"] == "image/png"
    assert by_name["notes.txt"]["content_type"] == "text/plain; charset=utf-8"
    assert by_name["notes.txt"]["mimetype"] == "text/plain"
    assert by_name["notes.txt"]["mimetype_params"] == {"charset": "utf-8"}
    assert by_name["x.dat"]["content_type"] == "application/octet-stream"
    assert by_name[""]["truthy"] is False and by_name["x.dat"]["truthy"] is True


def test_multipart_boundary_may_be_quoted_and_preamble_is_ignored(server):
    body = multipart([part("a", b"1")], boundary=b"q b", preamble=b"ignore me\r\n")
    got = describe(server, body, 'multipart/form-data; boundary="q b"')
    assert got["form"] == {"a": ["1"]}


@pytest.mark.parametrize("disposition, name, filename", [
    # RFC 5987 filename* wins over the ASCII fallback (RFC 6266 §4.3)
    (b"form-data; name=\"f\"; filename=\"fallback.txt\"; filename*=UTF-8''%E6%96%87%E4%BB%B6.txt",
     "f", "\u6587\u4ef6.txt"),
    (b"form-data; name=\"f\"; filename*=utf-8'zh'%E6%96%87%20%E4%BB%B6.txt", "f", "\u6587 \u4ef6.txt"),
    (b"form-data; name=\"f\"; filename*=iso-8859-1''caf%E9.txt", "f", "caf\u00e9.txt"),
    # raw UTF-8, as browsers send it
    ("form-data; name=\"f\"; filename=\"r\u00e9sum\u00e9 \u2713.txt\"".encode(), "f",
     "r\u00e9sum\u00e9 \u2713.txt"),
    # undecodable filename*: still a file, with replacement characters
    (b"form-data; name=\"f\"; filename*=UTF-8''bad%FF.txt", "f", "bad\ufffd.txt"),
    (b"form-data; name=\"f\"; filename*=x-unknown-charset''ok.txt", "f", "ok.txt"),
])
def test_non_ascii_filenames(server, disposition, name, filename):
    body = multipart([part(None, b"contents", disposition=disposition)])
    got = describe(server, body)
    assert got["form"] == {}
    assert [(key, f["filename"]) for key, f in got["files"]] == [(name, filename)]
    assert decoded(got["files"][0][1], "read") == b"contents"


@pytest.mark.parametrize("disposition, name, filename", [
    (b'form-data; name="a\\"b"; filename="x\\"y.txt"', 'a"b', 'x"y.txt'),
    (b'form-data; name="a%22b"; filename="x%22y.txt"', 'a"b', 'x"y.txt'),   # HTML5 escaping
    (b'form-data; name="semi;colon"; filename="a; b=c.txt"', "semi;colon", "a; b=c.txt"),
    (b'form-data; name="back"; filename="C:\\Users\\me\\report.txt"', "back",
     "C:\\Users\\me\\report.txt"),                                            # old IE: full path
    (b'form-data; name="esc"; filename="two\\\\slashes.txt"', "esc", "two\\slashes.txt"),
    (b"form-data; name=bare; filename=bare.txt", "bare", "bare.txt"),
    (b'FORM-DATA; NAME="Up"; FILENAME="Case.TXT"', "Up", "Case.TXT"),
])
def test_quoted_names_with_escapes(server, disposition, name, filename):
    body = multipart([part(None, b"v", disposition=disposition)])
    got = describe(server, body)
    assert [(key, f["name"], f["filename"]) for key, f in got["files"]] == [(name, name, filename)]


def test_quoted_field_name_with_escapes(server):
    body = multipart([part(None, b"v1", disposition=b'form-data; name="q\\"uote"'),
                      part(None, b"v2", disposition=b'form-data; name="pct%22name"')])
    assert describe(server, body)["form"] == {'q"uote': ["v1"], 'pct"name': ["v2"]}


def test_field_charset_that_is_no_text_codec_is_read_as_utf8(server):
    body = multipart([part("t", "caf\u00e9".encode(), content_type="text/plain; charset=idna"),
                      part("u", b"x", content_type="text/plain; charset=no-such-charset"),
                      part("l", b"caf\xe9", content_type="text/plain; charset=latin-1")])
    assert describe(server, body)["form"] == {"t": ["caf\u00e9"], "u": ["x"], "l": ["caf\u00e9"]}


# -- spooled uploads --------------------------------------------------------

def upload_pieces(size, boundary=b"spoolboundary", fields=((b"label", b"big one"),)):
    """(Content-Type, Content-Length, generator of body pieces, sha256 of the file) for a
    multipart body with ``fields`` and one ``size``-byte file, produced a MiB at a time."""
    block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB, no CR LF runs to matter
    head = b""
    for name, value in fields:
        head += b"--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n" % (
            boundary, name, value)
    head += (b"--%s\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"big.bin\"\r\n"
             b"Content-Type: application/octet-stream\r\n\r\n" % boundary)
    tail = b"\r\n--%s--\r\n" % boundary
    digest = hashlib.sha256()
    full, rest = divmod(size, len(block))
    for _ in range(full):
        digest.update(block)
    digest.update(block[:rest])

    def pieces():
        yield head
        for _ in range(full):
            yield block
        yield block[:rest]
        yield tail

    ctype = "multipart/form-data; boundary=" + boundary.decode()
    return ctype, len(head) + size + len(tail), pieces, digest.hexdigest()


def send_upload(server, size, what="hash"):
    ctype, length, pieces, sha = upload_pieces(size)
    with Connection(server.host, server.port, timeout=120) as conn:
        conn.send(b"POST /?what=%s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                  b"Content-Length: %d\r\n\r\n" % (what.encode(), ctype.encode(), length))
        for piece in pieces():
            conn.send(piece)
        resp = conn.read_response(skip_interim=True)
    return resp, sha


def test_upload_over_spool_size_is_read_from_its_file(server):
    size = 5 * 1024 * 1024 + 12345
    resp, sha = send_upload(server, size)
    assert resp.status == 200, resp
    got = resp.json()
    assert got["size"] == size
    assert got["sha256"] == sha
    assert got["saved_sha256"] == sha
    assert got["form"] == {"label": ["big one"]}


def test_spooled_upload_does_not_sit_in_memory(server):
    """50 MB through a 64 KiB spool: the server's anonymous memory grows by far less."""
    pid = server.proc.pid
    warm, _ = send_upload(server, 2 * 1024 * 1024)  # same code paths once, before measuring
    assert warm.status == 200, warm
    baseline = rss_kib(pid, "RssAnon")
    peak = [baseline]
    done = threading.Event()

    def sample():
        for _ in range(100_000):  # bounded; ends when the upload is answered
            if done.wait(0.005):
                return
            try:
                peak[0] = max(peak[0], rss_kib(pid, "RssAnon"))
            except (OSError, AssertionError):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    size = 50 * 1024 * 1024
    try:
        resp, sha = send_upload(server, size)
    finally:
        done.set()
        sampler.join(10)
    assert resp.status == 200, resp
    got = resp.json()
    assert (got["size"], got["sha256"], got["saved_sha256"]) == (size, sha, sha)
    growth_kb = max(peak[0], got["rss_anon_peak_kb"]) - baseline
    assert growth_kb < 16 * 1024, (
        f"anonymous memory grew by {growth_kb} KiB during a {size // 1024} KiB upload")


# -- limits -----------------------------------------------------------------

def many_parts(count):
    return multipart([part(f"f{i}", b"v") for i in range(count)])


def test_as_many_parts_as_allowed(server):
    got = describe(server, many_parts(MAX_PARTS), what="count")
    assert got == {"fields": MAX_PARTS, "files": 0}


def test_more_parts_than_allowed_is_413(server):
    resp = post(server, many_parts(MAX_PARTS + 1), content_type(), target="/?what=count")
    assert resp.status == 413, resp
    assert "error" in resp.json()


@pytest.mark.parametrize("preamble", [b"", b"p" * (SPOOL + 10) + b"\r\n"], ids=["memory", "spooled"])
def test_field_over_the_max_field_size_is_413(server, preamble):
    ok = multipart([part("big", b"x" * MAX_FIELD_SIZE)], preamble=preamble)
    assert describe(server, ok, what="count") == {"fields": 1, "files": 0}
    too_big = multipart([part("big", b"x" * (MAX_FIELD_SIZE + 1))], preamble=preamble)
    resp = post(server, too_big, content_type(), target="/?what=count")
    assert resp.status == 413, resp
    assert "error" in resp.json()


def test_file_part_is_not_limited_by_the_field_size(server):
    body = multipart([part("f", b"y" * (MAX_FIELD_SIZE * 2), filename="big.txt")])
    assert describe(server, body, what="count") == {"fields": 0, "files": 1}


# -- malformed bodies -------------------------------------------------------

B = b"----lite-form-7MA4YWxkTrZu0gW"
GOOD_PART = b"--" + B + b"\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue\r\n"

MALFORMED = {
    "no boundary parameter": ("multipart/form-data", multipart([part("a", b"1")])),
    "empty boundary": ("multipart/form-data; boundary=", multipart([part("a", b"1")])),
    "boundary over 70 characters": ("multipart/form-data; boundary=" + "b" * 71,
                                    multipart([part("a", b"1")], boundary=b"b" * 71)),
    "boundary never appears": (content_type(), b"just some text, no parts at all\r\n"),
    "garbage": (content_type(), bytes(range(256)) * 40),
    "empty body": (content_type(), b""),
    "missing closing boundary": (content_type(), GOOD_PART[:-2]),
    "closing boundary without dashes": (content_type(), GOOD_PART + b"--" + B),
    "part without Content-Disposition": (
        content_type(), b"--" + B + b"\r\nContent-Type: text/plain\r\n\r\nv\r\n--" + B + b"--\r\n"),
    "part without headers": (content_type(), b"--" + B + b"\r\n\r\nv\r\n--" + B + b"--\r\n"),
    "disposition without a name": (
        content_type(), multipart([part(None, b"v", disposition=b"form-data; filename=\"x\"")])),
    "disposition not form-data": (
        content_type(), multipart([part(None, b"v", disposition=b"attachment; name=\"a\"")])),
    "part header without colon": (
        content_type(), b"--" + B + b"\r\nContent-Disposition form-data\r\n\r\nv\r\n--" + B + b"--\r\n"),
    "part headers never end": (
        content_type(), b"--" + B + b"\r\nContent-Disposition: form-data; name=\"a\"\r\n"),
    "junk after the boundary": (content_type(), b"--" + B + b"junk\r\n" + GOOD_PART[len(B) + 4:]),
}


@pytest.mark.parametrize("padded", [False, True], ids=["memory", "spooled"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_multipart_is_400_and_the_server_goes_on(server, case, padded):
    ctype, body = MALFORMED[case]
    if padded:  # a preamble (ignored before the first boundary) pushes the body over --spool-size
        body = b"x" * (SPOOL + 100) + b"\r\n" + body
    resp = post(server, body, ctype, target="/?what=describe")
    assert resp.status == 400, resp
    assert resp.media_type() == "application/json"
    assert isinstance(resp.json().get("error"), str)
    assert request(server, "GET", "/").status == 200
    assert describe(server, multipart([part("ok", b"1")]))["form"] == {"ok": ["1"]}


def test_form_limits_are_set_by_flags(tmp_path):
    srv = start(tmp_path / "limits", SOURCE, "--max-form-parts", "3", "--max-form-field-size", "10")
    try:
        assert describe(srv, many_parts(3), what="count") == {"fields": 3, "files": 0}
        resp = post(srv, many_parts(4), content_type(), target="/?what=count")
        assert resp.status == 413 and "3 parts" in resp.json()["error"], resp
        assert describe(srv, multipart([part("f", b"x" * 10)]), what="count")["fields"] == 1
        resp = post(srv, multipart([part("f", b"x" * 11)]), content_type(), target="/?what=count")
        assert resp.status == 413 and "10 bytes" in resp.json()["error"], resp
    finally:
        kill(srv)
