"""Large multipart uploads are parsed as they arrive: a 200 MB upload (Content-Length or
chunked) raises the server process's peak resident memory (VmHWM, file pages included) by far
less than its size, each file part lands in a file of its own, and the raw body stays readable."""

import hashlib
import threading

import pytest

from support.http_client import Connection
from support.servers import module_server

SOURCE = r'''
import hashlib

import openbayes_serving as serv


class Predictor:
    def predict(self, request):
        if request.args.get("what") == "raw":
            data = request.get_data()
            return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        files = {}
        for key in request.files:
            for f in request.files.getlist(key):
                digest, size = hashlib.sha256(), 0
                for _ in range(1_000_000):   # bounded; ends at the end of the file
                    piece = f.stream.read(1 << 20)
                    if not piece:
                        break
                    digest.update(piece)
                    size += len(piece)
                files.setdefault(key, []).append([f.filename, size, digest.hexdigest(),
                                                  f.content_length])
        return {"form": request.form.to_dict(flat=False), "files": files}


if __name__ == "__main__":
    serv.run(Predictor)
'''

MIB = 1024 * 1024
BOUNDARY = b"memboundary"


server = module_server("uploads", SOURCE, "--max-body-size", str(300 * MIB))


def upload(size, second=0):
    """(body pieces generator factory, length, {name: sha256}) of a multipart body with a field,
    a ``size``-byte file and, when ``second``, another file of that many bytes."""
    block = hashlib.sha256(b"block").digest() * (MIB // 32)
    files = [("upload", "big.bin", size)] + ([("other", "small.bin", second)] if second else [])
    head = b'--%s\r\nContent-Disposition: form-data; name="label"\r\n\r\nbig one\r\n' % BOUNDARY
    plan, digests = [head], {}
    for name, filename, n in files:
        plan.append(b'--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                    b"Content-Type: application/octet-stream\r\n\r\n"
                    % (BOUNDARY, name.encode(), filename.encode()))
        full, rest = divmod(n, len(block))
        digest = hashlib.sha256()
        for _ in range(full):
            digest.update(block)
        digest.update(block[:rest])
        digests[name] = digest.hexdigest()
        plan.append((full, rest))
        plan.append(b"\r\n")
    plan.append(b"--%s--\r\n" % BOUNDARY)
    length = sum(len(p) if isinstance(p, bytes) else p[0] * len(block) + p[1] for p in plan)

    def pieces():
        for p in plan:
            if isinstance(p, bytes):
                yield p
            else:
                for _ in range(p[0]):
                    yield block
                yield block[:p[1]]
    return pieces, length, digests


def send(server, pieces, length, chunked, target="/"):
    ctype = b"multipart/form-data; boundary=" + BOUNDARY
    with Connection(server.host, server.port, timeout=300) as conn:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % length
        conn.send(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n%s\r\n\r\n"
                  % (target.encode(), ctype, framing))
        for piece in pieces():
            if chunked and piece:
                conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            elif piece:
                conn.send(piece)
        if chunked:
            conn.send(b"0\r\n\r\n")
        return conn.read_response(skip_interim=True)


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid):
    """Start VmHWM again from the present VmRSS (Linux: 5 to clear_refs); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_200_mb_upload_raises_peak_resident_memory_by_under_50_mb(server, chunked):
    pid = server.proc.pid
    pieces, length, digests = upload(4 * MIB)   # the same code paths once, before measuring
    assert send(server, pieces, length, chunked).status == 200
    baseline = status_kb(pid, "VmRSS")
    peak = [baseline]
    reset = reset_peak(pid)
    done = threading.Event()

    def sample():   # where VmHWM cannot be reset, VmRSS sampled as the upload runs
        for _ in range(1_000_000):
            if done.wait(0.002):
                return
            peak[0] = max(peak[0], status_kb(pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    pieces, length, digests = upload(200 * MIB)
    try:
        resp = send(server, pieces, length, chunked)
    finally:
        done.set()
        sampler.join(10)
    assert resp.status == 200, resp
    got = resp.json()
    assert got["form"] == {"label": ["big one"]}
    assert got["files"] == {"upload": [["big.bin", 200 * MIB, digests["upload"], 200 * MIB]]}
    if reset:
        peak[0] = max(peak[0], status_kb(pid, "VmHWM"))
    growth_mb = (peak[0] - baseline) / 1024
    assert growth_mb < 50, f"peak resident memory grew by {growth_mb:.0f} MB during a 200 MB upload"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_each_file_part_of_a_large_upload_is_a_file_of_its_own(server, chunked):
    pieces, length, digests = upload(3 * MIB + 7, second=2 * MIB + 3)
    got = send(server, pieces, length, chunked).json()
    assert got["files"] == {"upload": [["big.bin", 3 * MIB + 7, digests["upload"], 3 * MIB + 7]],
                            "other": [["small.bin", 2 * MIB + 3, digests["other"], 2 * MIB + 3]]}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_raw_body_of_a_large_upload_stays_readable(server, chunked):
    pieces, length, _ = upload(3 * MIB + 7, second=MIB)
    whole = hashlib.sha256()
    for piece in pieces():
        whole.update(piece)
    got = send(server, pieces, length, chunked, target="/?what=raw").json()
    assert got == {"size": length, "sha256": whole.hexdigest()}
