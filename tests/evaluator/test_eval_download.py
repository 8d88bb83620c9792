"""The downloader against a local threaded HTTP server (127.0.0.1): resumes, faults, concurrency.

Mutants this file caught (each made on purpose once, then restored):
- no kind check before the rename (``check_kind`` a no-op): the short/empty/HTML tests fail;
- a 416 answer re-raised instead of finishing the .part: the complete-.part test fails;
- no lock around the transfer: the concurrent-process test fails (several full GETs, or a
  process renames another's half-written .part);
- the old "kept ... resumes it" wording on every failure: the 404 test fails.
"""

import hashlib
import http.server
import io
import multiprocessing
import os
import threading
import time
import zipfile

import numpy as np
import pytest

from evaluations.download import download, recorded_sha256, verify_cached
from evaluations.errors import ChecksumError, DownloadError


def _npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, arr_0=np.arange(300_000, dtype=np.int32))  # ~1.2 MB, stored uncompressed
    return buf.getvalue()


PAYLOAD = _npz_bytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    drop_after = None  # bytes to send before closing the connection (once), or None
    body = PAYLOAD  # what the server serves with 200/206
    send_length = True  # send Content-Length
    status = None  # force an error status (e.g. 404)
    delay = 0.0  # seconds between 64 KiB chunks (concurrency test)
    ranges_seen: list = []
    full_gets = 0

    def do_GET(self):  # noqa: N802 - http.server API
        if Handler.status:
            self.send_error(Handler.status)
            return
        body, start = Handler.body, 0
        if rng := self.headers.get("Range"):
            start = int(rng.split("=")[1].split("-")[0])
            Handler.ranges_seen.append(start)
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        else:
            Handler.full_gets += 1
        part = body[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if Handler.send_length:
            self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        if Handler.drop_after is not None:
            self.wfile.write(part[: Handler.drop_after])
            Handler.drop_after = None
            self.close_connection = True
            return
        for i in range(0, len(part), 1 << 16):
            self.wfile.write(part[i : i + (1 << 16)])
            time.sleep(Handler.delay)
        self.close_connection = not Handler.send_length

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    Handler.drop_after, Handler.ranges_seen, Handler.full_gets = None, [], 0
    Handler.body, Handler.send_length, Handler.status, Handler.delay = PAYLOAD, True, None, 0.0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/ref_batches/ref.npz"
    httpd.shutdown()
    httpd.server_close()


def files(d):
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(".lock"))


def test_full_download_records_checksum(server, tmp_path):
    path = download(server, tmp_path, expected_sha256=SHA)
    assert path.read_bytes() == PAYLOAD
    assert recorded_sha256(path) == SHA
    assert files(tmp_path) == ["ref.npz", "ref.npz.sha256"]
    assert download(server, tmp_path) == path and Handler.full_gets == 1  # cached: not fetched


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    Handler.drop_after = 300_000
    with pytest.raises(DownloadError, match=r"ref.npz.part \(300000 bytes\) is kept"):
        download(server, tmp_path, retries=0)
    assert files(tmp_path) == ["ref.npz.part"]
    path = download(server, tmp_path, expected_sha256=SHA, retries=0)
    assert Handler.ranges_seen == [300_000]
    assert path.read_bytes() == PAYLOAD and files(tmp_path) == ["ref.npz", "ref.npz.sha256"]


def test_automatic_retry_resumes_within_one_call(server, tmp_path):
    Handler.drop_after = 123_456
    assert download(server, tmp_path, expected_sha256=SHA, retries=2).read_bytes() == PAYLOAD
    assert Handler.ranges_seen == [123_456]


def test_complete_part_left_by_a_crash_is_verified_and_finished(server, tmp_path):
    (tmp_path / "ref.npz.part").write_bytes(PAYLOAD)  # killed between transfer and rename
    path = download(server, tmp_path, retries=0)
    assert path.read_bytes() == PAYLOAD and recorded_sha256(path) == SHA
    assert Handler.full_gets == 0 and Handler.ranges_seen == [len(PAYLOAD)]  # one 416, no more


@pytest.mark.parametrize("fault", ["short_no_length", "empty", "html", "not_npz"])
def test_wrong_bodies_are_rejected_and_never_renamed(server, tmp_path, fault):
    Handler.send_length = fault != "html"
    Handler.body = {
        "short_no_length": PAYLOAD[:500_000],
        "empty": b"",
        "html": b"<!DOCTYPE html><html><body>Service busy</body></html>",
        "not_npz": os.urandom(4096),
    }[fault]
    if fault == "short_no_length":
        Handler.send_length = False
    with pytest.raises(DownloadError) as info:
        download(server, tmp_path, retries=0)
    msg = str(info.value)
    assert "\n" not in msg and "nothing was kept" in msg
    assert {"empty": "empty body", "html": "HTML"}.get(fault, "not a complete npz") in msg
    assert files(tmp_path) == []


def test_not_found_says_nothing_was_kept(server, tmp_path):
    Handler.status = 404
    with pytest.raises(DownloadError) as info:
        download(server, tmp_path, retries=0)
    assert "HTTP 404" in str(info.value) and "nothing was kept" in str(info.value)
    assert "resumes" not in str(info.value) and files(tmp_path) == []


def test_graph_that_does_not_parse_is_rejected(server, tmp_path):
    Handler.body = b"\x0a\x05hello" + os.urandom(100)
    with pytest.raises(DownloadError, match="not a usable feature graph"):
        download(server.replace("ref.npz", "graph.pb"), tmp_path, retries=0)
    assert files(tmp_path) == []


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    with pytest.raises(ChecksumError, match="does not match"):
        download(server, tmp_path, expected_sha256="0" * 64)
    assert files(tmp_path) == []


def test_corrupted_cache_file_is_detected(server, tmp_path):
    path = download(server, tmp_path)
    path.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(ChecksumError, match="recorded at download"):
        verify_cached(path)


def _worker(url, cache, queue):
    try:
        queue.put(str(download(url, cache, retries=0)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(f"error: {exc}")


def test_concurrent_processes_fetch_once_and_agree(server, tmp_path):
    Handler.delay = 0.01  # ~0.2 s per transfer: the four processes overlap
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(server, tmp_path, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == [str(tmp_path / "ref.npz")] * 4, results
    assert Handler.full_gets == 1 and Handler.ranges_seen == []
    assert (tmp_path / "ref.npz").read_bytes() == PAYLOAD
    assert files(tmp_path) == ["ref.npz", "ref.npz.sha256"]
    with zipfile.ZipFile(tmp_path / "ref.npz") as zf:
        assert zf.testzip() is None
