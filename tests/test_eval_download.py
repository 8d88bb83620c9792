"""The downloader against a local threaded HTTP server with Range support and dropped transfers."""

import hashlib
import http.server
import threading

import pytest

from evaluations.download import download, verify_cached
from evaluations.errors import ChecksumError, DownloadError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    drop_after = None  # bytes to send before closing the connection (once), or None
    ranges_seen: list = []

    def do_GET(self):  # noqa: N802 - http.server API
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.split("=")[1].split("-")[0])
            Handler.ranges_seen.append(start)
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if Handler.drop_after is not None:
            self.wfile.write(body[:Handler.drop_after])
            Handler.drop_after = None
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    Handler.drop_after, Handler.ranges_seen = None, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/ref_batches/graph.pb"
    httpd.shutdown()
    httpd.server_close()


def test_full_download_records_checksum(server, tmp_path):
    path = download(server, tmp_path, expected_sha256=SHA)
    assert path.read_bytes() == PAYLOAD
    assert (tmp_path / "graph.pb.sha256").read_text().split()[0] == SHA
    assert not (tmp_path / "graph.pb.part").exists()
    assert download(server, tmp_path) == path  # cached: verified, not fetched again


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    Handler.drop_after = 300_000
    with pytest.raises(DownloadError, match="resumes"):
        download(server, tmp_path, retries=0)
    part = tmp_path / "graph.pb.part"
    assert part.stat().st_size == 300_000 and not (tmp_path / "graph.pb").exists()
    path = download(server, tmp_path, expected_sha256=SHA, retries=0)
    assert Handler.ranges_seen == [300_000]
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_automatic_retry_resumes_within_one_call(server, tmp_path):
    Handler.drop_after = 123_456
    assert download(server, tmp_path, expected_sha256=SHA, retries=2).read_bytes() == PAYLOAD
    assert Handler.ranges_seen == [123_456]


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    with pytest.raises(ChecksumError, match="does not match"):
        download(server, tmp_path, expected_sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_corrupted_cache_file_is_detected(server, tmp_path):
    path = download(server, tmp_path)
    path.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(ChecksumError, match="recorded at download"):
        verify_cached(path)
