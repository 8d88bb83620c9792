"""The downloader against a local threaded HTTP server (127.0.0.1): resumes, faults, concurrency.

Mutants this file caught (each made on purpose once, then restored):
- no kind check before the rename (``check_kind`` a no-op): the short/empty/HTML tests fail;
- a 416 answer re-raised instead of finishing the .part: the complete-.part test fails;
- no lock around the transfer: the concurrent-process test fails (several full GETs, or a
  process renames another's half-written .part);
- the old "kept ... resumes it" wording on every failure: the 404 test fails;
- ``read`` instead of ``read1`` (the body waits in memory, the .part stays empty): the trickle
  test fails; no deadline check in the read loop: the deadline test fails (stalls are not enough);
- no wait between attempts, or no doubling: the 503-then-200 test fails;
- urllib's redirect-loop message passed through: three lines, the redirect test fails;
- the .part named ``NAME.part`` whatever the URL: the other-URL test fails ("damaged archive");
- ``_kept`` leaving an empty .part: the closed-early test fails.
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

from evaluations import download as dl
from evaluations.download import download, part_path, recorded_sha256, verify_cached
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
    trickle = None  # seconds between single bytes (at most 10 of them), or None
    fail_codes: list = []  # statuses answered, one per request, before serving the body
    ranges_seen: list = []
    full_gets = 0

    def do_GET(self):  # noqa: N802 - http.server API
        if self.path.startswith("/loop"):  # a redirect to itself
            self.send_response(302)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if Handler.status or Handler.fail_codes:
            self.send_error(Handler.status or Handler.fail_codes.pop(0))
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
        if Handler.trickle is not None:
            for i in range(min(len(part), 10)):  # bounded: the client gives up long before
                try:
                    self.wfile.write(part[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(Handler.trickle)
            self.close_connection = True
            return
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
    Handler.trickle, Handler.fail_codes = None, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/ref_batches/ref.npz"
    httpd.shutdown()
    httpd.server_close()


def files(d):
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(".lock"))


def test_full_download_records_checksum(server, tmp_path, capsys):
    path = download(server, tmp_path, expected_sha256=SHA)
    assert capsys.readouterr().err == ""  # small files: no progress output
    assert path.read_bytes() == PAYLOAD
    assert recorded_sha256(path) == SHA
    assert files(tmp_path) == ["ref.npz", "ref.npz.sha256"]
    assert download(server, tmp_path) == path and Handler.full_gets == 1  # cached: not fetched


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    Handler.drop_after = 300_000
    part = part_path(tmp_path / "ref.npz", server)
    with pytest.raises(DownloadError, match=rf"{part.name} \(300000 bytes\) is kept"):
        download(server, tmp_path, retries=0)
    assert files(tmp_path) == [part.name]
    path = download(server, tmp_path, expected_sha256=SHA, retries=0)
    assert Handler.ranges_seen == [300_000]
    assert path.read_bytes() == PAYLOAD and files(tmp_path) == ["ref.npz", "ref.npz.sha256"]


def test_automatic_retry_resumes_within_one_call(server, tmp_path):
    Handler.drop_after = 123_456
    sleeps = []
    assert download(server, tmp_path, expected_sha256=SHA, retries=2, sleep=sleeps.append).read_bytes() == PAYLOAD
    assert Handler.ranges_seen == [123_456] and sleeps == [2.0]


def test_complete_part_left_by_a_crash_is_verified_and_finished(server, tmp_path):
    part_path(tmp_path / "ref.npz", server).write_bytes(PAYLOAD)  # killed between transfer and rename
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


def one_line(info) -> str:
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_trickle_hits_the_stall_timeout_with_the_bytes_on_disk(server, tmp_path):
    """One byte every 2 s: abandoned after 1 s without a byte; the byte received is in the .part
    (streamed as it arrived, not held in memory) and the message says so."""
    Handler.trickle = 2.0
    part = part_path(tmp_path / "ref.npz", server)
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(server, tmp_path, retries=0, stall_timeout=1.0)
    assert time.monotonic() - t0 < 1.8
    msg = one_line(info)
    assert server in msg and "no byte for 1 s" in msg and "1 bytes received" in msg, msg
    assert f"{part} (1 bytes) is kept" in msg, msg
    assert part.read_bytes() == PAYLOAD[:1]


def test_overall_deadline_ends_a_transfer_that_never_stalls(server, tmp_path):
    Handler.trickle = 0.2  # never 1 s without a byte, never finished
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(server, tmp_path, retries=3, stall_timeout=1.0, deadline=1.0, sleep=pytest.fail)
    assert time.monotonic() - t0 < 1.8
    msg = one_line(info)
    assert "not finished within the 1 s deadline" in msg and "is kept" in msg, msg
    size = part_path(tmp_path / "ref.npz", server).stat().st_size
    assert 2 <= size <= 7 and f"{size} bytes received" in msg, msg


def test_503_then_200_succeeds_after_growing_waits(server, tmp_path, capsys):
    Handler.fail_codes = [503, 500]
    sleeps = []
    path = download(server, tmp_path, expected_sha256=SHA, retries=3, backoff=0.5, sleep=sleeps.append)
    assert path.read_bytes() == PAYLOAD and sleeps == [0.5, 1.0]
    assert "HTTP 503 Service Unavailable; retry 1 of 3 in 0.5 s" in capsys.readouterr().err


def test_waits_are_bounded_and_never_past_the_deadline(server, tmp_path):
    Handler.status = 503
    sleeps = []
    with pytest.raises(DownloadError) as info:
        download(server, tmp_path, retries=8, backoff=10.0, sleep=sleeps.append)
    assert sleeps == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0, 60.0, 60.0]
    assert "HTTP 503" in one_line(info) and "nothing was kept" in str(info.value)
    sleeps.clear()
    with pytest.raises(DownloadError, match="deadline comes before a retry; 0 bytes received; nothing was kept"):
        download(server, tmp_path, retries=3, backoff=5.0, deadline=2.0, sleep=sleeps.append)
    assert sleeps == [] and files(tmp_path) == []


def test_connection_errors_are_retried_with_backoff(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/ref.npz"
    sleeps = []
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path, retries=2, backoff=0.1, sleep=sleeps.append)
    assert sleeps == [0.1, 0.2] and "cannot connect" in one_line(info) and "nothing was kept" in str(info.value)


def test_redirect_loop_is_one_line(server, tmp_path):
    url = server.replace("/ref_batches/", "/loop/")
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path, retries=3, sleep=pytest.fail)
    msg = one_line(info)
    assert msg.startswith(f"{url}: redirect loop (HTTP 302") and msg.endswith("nothing was kept"), msg
    assert files(tmp_path) == []


def test_part_of_another_url_is_never_resumed(server, tmp_path, capsys):
    """A config changed from URL A to URL B (same file name) after A's transfer was cut: B starts
    from byte 0 and the A leftovers (and an unkeyed NAME.part of older versions) are deleted."""
    buf = io.BytesIO()
    np.savez(buf, arr_0=np.arange(300_000, dtype=np.int64))  # another file of the same name
    Handler.body, Handler.drop_after = buf.getvalue(), 300_000
    url_a = server.replace("/ref_batches/", "/old/")
    with pytest.raises(DownloadError, match="is kept"):
        download(url_a, tmp_path, retries=0)
    (tmp_path / "ref.npz.part").write_bytes(buf.getvalue()[:1000])
    Handler.body, Handler.full_gets = PAYLOAD, 0
    path = download(server, tmp_path, expected_sha256=SHA, retries=0)
    assert path.read_bytes() == PAYLOAD and Handler.ranges_seen == [] and Handler.full_gets == 1
    assert files(tmp_path) == ["ref.npz", "ref.npz.sha256"]
    err = capsys.readouterr().err
    assert "(300000 bytes): left by another URL, not resumed" in err and "(1000 bytes)" in err


def test_message_matches_what_is_on_disk(server, tmp_path):
    """Headers, then the connection closes before any byte: no empty .part is left behind the
    words "nothing was kept"; after some bytes the .part is named with its size."""
    Handler.drop_after = 0
    with pytest.raises(DownloadError) as info:
        download(server, tmp_path, retries=0)
    msg = one_line(info)
    assert f"closed early (0 of {len(PAYLOAD)} bytes)" in msg and msg.endswith("nothing was kept"), msg
    assert files(tmp_path) == []
    Handler.drop_after = 1000
    with pytest.raises(DownloadError) as info:
        download(server, tmp_path, retries=0)
    part = part_path(tmp_path / "ref.npz", server)
    assert f"{part} (1000 bytes) is kept" in one_line(info) and files(tmp_path) == [part.name]


def test_large_files_report_progress_on_stderr(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dl, "PROGRESS_MIN_BYTES", 0)
    Handler.delay = 0.01
    download(server, tmp_path, progress_every=0.05)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2 and all(line.startswith("ref.npz: ") and "MiB of 1.1 MiB (" in line for line in lines)
    (tmp_path / "ref.npz").unlink()
    download(server, tmp_path, progress_every=None)
    assert capsys.readouterr().err == ""
