"""doodle.download against hostile servers on 127.0.0.1: trickles, endless bodies, redirect loops, compressed
or binary bodies, a mirror without a category, no server at all. Nothing may hang, fill the disk, print raw
bytes or more than one line per cause. The limits are module settings lowered here, so each test takes well
under a second."""

from __future__ import annotations

import contextlib
import gzip
import http.server
import resource
import socket
import threading
import time
import urllib.parse
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_download import FAST, etag, leftovers, tiny_ndjson

from doodle import dataset
from doodle import download as dl
from doodle.categories import CATEGORIES, FORMATS

ONE_TRY = dict(retries=0, backoff=0.001, timeout=5.0)
SENT_AT_MOST = 50 << 20  # an "endless" body stops here whatever happens, so no test can fill the disk itself
SOURCE = tiny_ndjson("cat", 40)  # 9 KB of real-looking drawings


@pytest.fixture(autouse=True)
def small_limits(monkeypatch):
    """Limits a test can exceed in milliseconds: a 0.3 s stall window at 10 KB/s, 256 KB files, 64 KB lines."""
    monkeypatch.setattr(dl, "STALL_WINDOW", 0.3)
    monkeypatch.setattr(dl, "STALL_RATE", 10_000)
    monkeypatch.setattr(dl, "MAX_BYTES", dict.fromkeys(dl.MAX_BYTES, 256 << 10))
    monkeypatch.setattr(dl, "MAX_LINE", 64 << 10)


class Hostile(http.server.BaseHTTPRequestHandler):
    """Answers every GET with server.behave(self); records each request and the bytes sent."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.requests.append({"path": urllib.parse.unquote(self.path), "range": self.headers.get("Range")})
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            srv.behave(self)

    def head(self, status: int = 200, **headers) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), str(v))
        self.end_headers()

    def send(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        self.server.sent += len(data)


@contextlib.contextmanager
def hostile(behave):
    """A server on 127.0.0.1 whose every answer is behave(handler); yields it (its .url, .requests, .sent)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    srv.daemon_threads = True
    srv.behave, srv.requests, srv.sent, srv.lock = behave, [], 0, threading.Lock()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def reused():
    """One hostile server for the examples of a generated test: set its .behave per example."""
    with hostile(None) as srv:
        yield srv


def endless(h: Hostile, piece: bytes, **headers) -> None:
    """Headers, then `piece` again and again until the client hangs up (or SENT_AT_MOST)."""
    h.head(200, Connection="close", **headers)
    h.close_connection = True
    while h.server.sent < SENT_AT_MOST:
        h.send(piece)


def one_line(text: str | None) -> bool:
    """One printable line: no newline, no control character (so no raw byte either)."""
    return text is not None and text.isprintable()


def ndjson_path(data: Path, word: str = "cat") -> Path:
    return dl.local_path(data, "simplified", word)


# ---------------------------------------------------------------------------------------- stalls

def trickle_then_serve(data: bytes, burst: int, every: float, h: Hostile) -> None:
    """The first request: `burst` bytes, then one byte per `every` seconds (forever, for all the client
    knows). A request with a Range (the resume) is answered at once, like Google's bucket."""
    tag = etag(data)
    rng = h.headers.get("Range")
    if rng:
        start = int(rng.removeprefix("bytes=").split("-")[0])
        h.head(206, Content_Length=len(data) - start, ETag=tag,
               Content_Range=f"bytes {start}-{len(data) - 1}/{len(data)}")
        return h.send(data[start:])
    h.head(200, Content_Length=len(data), ETag=tag)
    h.send(data[:burst])
    for i in range(burst, min(len(data), burst + 200)):  # at most ~200 x `every`: the client must give up first
        time.sleep(every)
        h.send(data[i:i + 1])


def test_a_trickle_fails_as_stalled_keeps_the_part_and_resumes(tmp_path):
    with hostile(partial(trickle_then_serve, SOURCE, 2000, 0.02)) as srv:
        t0 = time.monotonic()
        [r] = dl.download(["cat"], data_dir=tmp_path, base_url=srv.url, **FAST)
        took = time.monotonic() - t0
        assert r.status == "failed" and one_line(r.error)
        assert 0.3 <= took < 1.0  # one stall window (0.3 s), not forever, and not retried
        assert len(srv.requests) == 1
        part = ndjson_path(tmp_path).with_name("cat.ndjson.part")
        assert r.error.startswith(f"{r.url}: stalled: ") and "under the 9.77 KB/s a download needs" in r.error
        assert r.error.endswith(f"so far kept in {part} (run again to resume, or delete it)")
        kept = part.read_bytes()
        assert len(kept) >= 2000 and SOURCE.startswith(kept)
        [r] = dl.download(["cat"], data_dir=tmp_path, base_url=srv.url, **FAST)
        assert r.status == "resumed" and r.path.read_bytes() == SOURCE
        assert srv.requests[-1]["range"] == f"bytes={len(kept)}-"  # the bytes of the stalled attempt were kept
    assert leftovers(tmp_path) == [".cat.ndjson.json", "cat.ndjson"]


def test_a_fast_enough_download_is_never_stalled(tmp_path, monkeypatch):
    """Slow but steady, above the rate (20 KB at ~20 KB/s for 1 s, three windows, at 2 KB/s needed): it finishes."""
    monkeypatch.setattr(dl, "STALL_RATE", 2000)  # 10x below what is sent: a loaded machine cannot make it a stall
    data = tiny_ndjson("cat", 90)
    assert len(data) > 20_000

    def steady(h):
        h.head(200, Content_Length=len(data))
        for at in range(0, len(data), 2000):
            h.send(data[at:at + 2000])
            time.sleep(0.1)

    with hostile(steady) as srv:
        [r] = dl.download(["cat"], data_dir=tmp_path, base_url=srv.url, **ONE_TRY)
    assert r.status == "downloaded" and r.path.read_bytes() == data


def test_headers_sent_a_byte_at_a_time_are_a_stall_too(tmp_path):
    def slow_headers(h):
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n":
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(0.05)  # 0.05 s: every read succeeds; the whole status line takes 2 s

    with hostile(slow_headers) as srv:
        t0 = time.monotonic()
        [r] = dl.download(["cat"], data_dir=tmp_path, base_url=srv.url, **FAST)
        assert time.monotonic() - t0 < 1.0
    assert r.error == f"{r.url}: stalled: no response headers within 0.3 s" and len(srv.requests) == 1
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------- endless bodies

def test_a_limited_download_stops_reading_once_it_has_its_drawings(tmp_path):
    line = tiny_ndjson("cat", 1)
    with hostile(partial(endless, piece=line * 100)) as srv:  # valid drawings forever, no size, no ETag
        [r] = dl.download(["cat"], data_dir=tmp_path, base_url=srv.url, max_drawings=5, **ONE_TRY)
        assert r.status == "downloaded" and r.drawings == 5 and r.path.read_bytes() == line * 5
        for _ in range(40):  # the client hung up: the server's writes fail once the socket buffers are full
            sent = srv.sent
            time.sleep(0.05)
            if srv.sent == sent:
                break
        assert srv.sent == sent < 8 << 20
    assert leftovers(tmp_path) == [".cat.ndjson.json", "cat.ndjson"]


@pytest.mark.parametrize("fmt, piece, limit, why", [
    ("simplified", tiny_ndjson("cat", 1) * 100, None, "is over 256 KB, more than any Quick, Draw! simplified file has"),
    ("raw", b"x" * 65536, 5, "has a line of over 64 KB: not Quick, Draw! drawings"),
    ("simplified", b"\0" * 65536, None, "has a line of over 64 KB: not Quick, Draw! drawings"),
    ("simplified", b"<html>busy</html>\n" * 1000, None, "is not Quick, Draw! drawings (its first line is "
                                                        "'<html>busy</html>')"),
    ("numpy_bitmap", b"\0" * 65536, None, "is not a .npy file (bad magic bytes)"),
])
def test_an_endless_body_is_refused_and_leaves_nothing(tmp_path, fmt, piece, limit, why):
    with hostile(partial(endless, piece=piece)) as srv:
        [r] = dl.download(["cat"], fmt=fmt, data_dir=tmp_path, base_url=srv.url, max_drawings=limit, **FAST)
        assert r.error == f"{r.url}: what the server sent {why}; check the base URL, or try again later"
        assert len(srv.requests) == 1  # refused, not retried
        assert srv.sent < (256 << 10) + (8 << 20)  # what the client read, plus the socket buffers
    assert leftovers(tmp_path) == []  # no .part: it could never be resumed


def npy_header(shape: tuple) -> bytes:
    """A version 1.0 .npy header for uint8 rows of `shape`."""
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def endless_npy(header: bytes, rows: np.ndarray, h: Hostile) -> None:
    """A .npy header, then `rows` again and again, with no size stated."""
    h.head(200, Connection="close")
    h.close_connection = True
    h.send(header)
    while h.server.sent < SENT_AT_MOST:
        h.send(rows.tobytes())


def test_an_npy_header_that_claims_too_much(tmp_path):
    """An endless .npy: refused at its header unless limited, when only the rows asked for are read."""
    rows = (np.arange(784 * 3) % 256).astype(np.uint8)
    with hostile(partial(endless_npy, npy_header((10_000_000, 784)), rows)) as srv:
        [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=srv.url, **FAST)
        assert r.error == (f"{r.url}: what the server sent claims 7,840,000,128 bytes (.npy header), more than "
                           f"any Quick, Draw! numpy_bitmap file has (256 KB at most); check the base URL, or try again "
                           f"later")
        [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=srv.url, max_drawings=5, **FAST)
        assert r.status == "downloaded" and np.load(r.path).shape == (5, 784)
        np.testing.assert_array_equal(np.load(r.path).ravel(), np.resize(rows, 5 * 784))
        [r] = dl.download(["dog"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=srv.url, max_drawings=500, **FAST)
        assert "claims 392,128 bytes (.npy header: 500 rows of 784 bytes)" in r.error  # 500 rows: over the bound
    assert leftovers(tmp_path / "numpy_bitmap") == [".cat.npy.json", "cat.npy"]


def test_rows_past_what_the_npy_header_declares_are_refused(tmp_path):
    rows = (np.arange(784 * 3) % 256).astype(np.uint8)
    with hostile(partial(endless_npy, npy_header((5, 784)), rows)) as srv:
        [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=srv.url, **FAST)
    assert r.error == (f"{r.url}: what the server sent runs past the 4,048 bytes its .npy header states; "
                       f"check the base URL, or try again later")
    assert leftovers(tmp_path) == []


def test_more_than_the_content_length_is_refused(tmp_path):
    """Chunked with a Content-Length too: http.client reads the chunks (endless here), so the length is ours to hold."""
    def behave(h):
        h.head(200, Transfer_Encoding="chunked", Content_Length=len(SOURCE), ETag='"x"')
        chunk = SOURCE[:4096]
        while h.server.sent < SENT_AT_MOST:
            h.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    with hostile(behave) as srv:
        [r] = dl.download(["cat"], data_dir=tmp_path, base_url=srv.url, **FAST)
    assert r.error == (f"{r.url}: what the server sent runs past the {len(SOURCE):,} bytes its Content-Length states; "
                       f"check the base URL, or try again later")
    assert leftovers(tmp_path) == []


def test_a_stated_size_past_any_real_file_is_refused_before_reading(tmp_path):
    def behave(h):
        h.head(200, Content_Length=5 << 30)
        h.send(SOURCE)

    with hostile(behave) as srv:
        [r] = dl.download(["cat"], fmt="raw", data_dir=tmp_path, base_url=srv.url, **FAST)
    assert "claims 5,368,709,120 bytes (Content-Length), more than any Quick, Draw! raw file has" in r.error
    assert leftovers(tmp_path) == []


@contextlib.contextmanager
def disk_full_after(nbytes: int):
    """Writes past `nbytes` into any file fail (EFBIG, as ENOSPC would on a full disk) while in the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))  # Python ignores SIGXFSZ: write() fails instead
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize("validators", [{}, {"ETag": '"v1"'}])
def test_a_full_disk_keeps_only_a_part_that_can_be_resumed(tmp_path, monkeypatch, validators):
    monkeypatch.setattr(dl, "MAX_BYTES", dict.fromkeys(dl.MAX_BYTES, 64 << 20))  # the disk fills first
    line = tiny_ndjson("cat", 1)
    with hostile(partial(endless, piece=line * 100, **validators)) as srv:
        with disk_full_after(100_000):
            [r] = dl.download(["cat"], data_dir=tmp_path, base_url=srv.url, **FAST)
    part = ndjson_path(tmp_path).with_name("cat.ndjson.part")
    assert r.status == "failed" and one_line(r.error) and len(srv.requests) == 1
    assert r.error.startswith(f"{ndjson_path(tmp_path)}: File too large")
    if validators:  # an ETag to resume with: kept, and the message says where and how big
        assert r.error.endswith(f"; 97.7 KB so far kept in {part} (run again to resume, or delete it)")
        assert part.stat().st_size == 100_000
    else:  # nothing to resume it by: the next run would start again, so it goes now
        assert not part.exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------- redirects

def test_a_redirect_loop_is_one_line(tmp_path):
    def behave(h):
        nxt = "/a" if h.path != "/a" else "/full/simplified/cat.ndjson"
        h.head(302, Location=nxt, Content_Length=0)

    with hostile(behave) as srv:
        [r] = dl.download(["cat"], data_dir=tmp_path, base_url=srv.url, **FAST)
    assert one_line(r.error) and r.error.startswith(f"{r.url}: redirect loop: 8 redirects without reaching the file "
                                                    f"(the last one from {srv.url}/")
    assert r.error.endswith("); check the base URL")
    assert len(srv.requests) <= dl.MAX_REDIRECTS + 1  # not retried
    assert leftovers(tmp_path) == []


def test_redirects_within_http_are_followed(tmp_path):
    def behave(h):
        if h.path.startswith("/mirror/"):
            h.head(200, Content_Length=len(SOURCE))
            return h.send(SOURCE)
        h.head(301, Location="/mirror" + h.path, Content_Length=0)

    with hostile(behave) as srv:
        [r] = dl.download(["cat"], data_dir=tmp_path, base_url=srv.url, **FAST)
    assert r.status == "downloaded" and r.path.read_bytes() == SOURCE


@pytest.mark.parametrize("scheme", ["ftp", "FTP", "file", "gopher", "data"])
def test_a_redirect_out_of_http_is_refused(tmp_path, scheme):
    with socket.socket() as listener:  # where an ftp:// client would connect: nobody may
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        target = f"{scheme}://127.0.0.1:{listener.getsockname()[1]}/full/simplified/cat.ndjson"

        def behave(h):
            h.head(302, Location=target, Content_Length=0)

        with hostile(behave) as srv:
            [r] = dl.download(["cat"], data_dir=tmp_path, base_url=srv.url, **FAST)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert r.error == (f"{r.url}: HTTP 302 redirects to {target}: only http:// and https:// redirects are followed; "
                       f"check the base URL")
    assert len(srv.requests) == 1 and leftovers(tmp_path) == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(location=st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=200),
       scheme=st.sampled_from(["ftp", "javascript", "mailto", "x-y"]))
def test_any_refused_redirect_is_said_in_one_printable_line(reused, tmp_path_factory, location, scheme):
    """Whatever the Location holds (control characters, any script), the message shows it escaped, on one line."""
    target = f"{scheme}:{location}"

    def behave(h):
        h.close_connection = True
        h.wfile.write(b"HTTP/1.1 302 Found\r\nLocation: " + target.encode() + b"\r\nContent-Length: 0\r\n\r\n")

    reused.behave = behave
    [r] = dl.download(["cat"], data_dir=tmp_path_factory.mktemp("d"), base_url=reused.url, **ONE_TRY)
    assert r.status == "failed" and one_line(r.error) and len(r.error) < 400


# ---------------------------------------------------------------------------------------- what is printed

def test_a_compressed_body_is_described_not_printed(tmp_path):
    packed = gzip.compress(SOURCE)

    def behave(h):
        h.head(200, Content_Length=len(packed), Content_Encoding="gzip")
        h.send(packed)

    with hostile(behave) as srv:
        [r] = dl.download(["cat"], data_dir=tmp_path, base_url=srv.url, **FAST)
    assert r.error == (f"{r.url}: the server sent it compressed (Content-Encoding: gzip) though asked not to; "
                       f"serve the files as they are")
    assert len(srv.requests) == 1 and leftovers(tmp_path) == []


def test_a_gzip_file_served_as_ndjson_is_described(tmp_path):
    packed = gzip.compress(SOURCE)

    def behave(h):  # no Content-Encoding: the file itself is gzip (a .gz renamed)
        h.head(200, Content_Length=len(packed))
        h.send(packed)

    with hostile(behave) as srv:
        [r] = dl.download(["cat"], data_dir=tmp_path, base_url=srv.url, **FAST)
    assert r.error.endswith("what the server sent is not Quick, Draw! drawings (its first line is gzip-compressed "
                            "data); check the base URL, or try again later")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(min_size=1, max_size=3000), fmt=st.sampled_from(list(FORMATS)),
       limit=st.sampled_from([None, 3]), stated=st.booleans())
def test_whatever_the_server_sends_the_outcome_is_clean(reused, tmp_path_factory, body, fmt, limit, stated):
    """Any body, with or without a size: a file is kept only if it is right, an error is one printable line,
    and nothing else is left but a .part that can be resumed."""
    def behave(h):
        h.head(200, ETag='"e"', **({"Content_Length": len(body)} if stated else {"Connection": "close"}))
        h.close_connection = not stated
        h.send(body)

    data = tmp_path_factory.mktemp("d")
    reused.behave = behave
    [r] = dl.download(["cat"], fmt=fmt, data_dir=data, base_url=reused.url, max_drawings=limit, **ONE_TRY)
    if r.status == "failed":
        assert one_line(r.error) and len(r.error) < 400
        assert "\ufffd" not in r.error or "\ufffd".encode() in body  # bytes are described, never decoded blindly
    else:
        dl._check_file(r.path, fmt)
    part = dl.local_path(data, fmt, "cat").with_name(f"cat.{FORMATS[fmt]}.part")
    assert set(leftovers(data)) <= {f"cat.{FORMATS[fmt]}", f".cat.{FORMATS[fmt]}.json", part.name,
                                    f".{part.name}.json"}
    assert part.exists() == (f".{part.name}.json" in leftovers(data))  # a .part is kept only with its ETag


def test_a_category_missing_from_a_mirror_is_not_called_misspelled(tmp_path):
    from typer.testing import CliRunner

    from doodle.cli import app

    def behave(h):  # a mirror of one category
        if h.path != "/full/simplified/cat.ndjson":
            return h.head(404, Content_Length=0)
        h.head(200, Content_Length=len(SOURCE))
        h.send(SOURCE)

    assert "zebra" in CATEGORIES
    with hostile(behave) as srv:
        res = CliRunner().invoke(app, ["download", "zebra", "cat", "--data-dir", str(tmp_path), "--base-url", srv.url])
    assert res.exit_code == 1
    [line] = [e for e in res.stderr.splitlines() if e.startswith("error:")]
    assert line == (f"error: {srv.url}/full/simplified/zebra.ndjson: not on this server (404); the category "
                    f"is in Google's dataset: check the base URL, or use a mirror that has it")
    assert "spelled" not in res.stderr and ndjson_path(tmp_path).read_bytes() == SOURCE


# ---------------------------------------------------------------------------------------- no server at all

def dead_url() -> str:
    """A loopback port nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_download_with_no_server_says_it_once(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from doodle.cli import app

    monkeypatch.setattr(dl, "download", partial(dl.download, backoff=0.001))
    url = dead_url()
    res = CliRunner().invoke(app, ["download", "cat", "dog", "apple", "bee", "cow", "--data-dir", str(tmp_path),
                                   "--base-url", url, "--retries", "2", "--jobs", "3"])
    assert res.exit_code == 1
    lines = [line for line in res.stderr.splitlines() if line]
    host = url.removeprefix("http://")
    assert lines == [f"cannot reach {host}: Connection refused; retrying up to 2 times",
                     f"error: 5 files failed: cannot reach {host}: Connection refused (gave up after 3 attempts): "
                     f"cat, dog, apple, bee, cow",
                     dl.OFFLINE_HINT,
                     "5 of 5 files failed: run the same command again to retry (complete files are not fetched again)"]


def test_train_with_no_server_says_it_once_and_what_to_do(tmp_path, monkeypatch):
    """`doodle train` used to print 14 retry lines and a 1,000-character error."""
    from typer.testing import CliRunner

    from doodle.cli import app

    monkeypatch.setattr(dataset, "ensure_downloaded", partial(dl.ensure_downloaded, backoff=0.001))
    url = dead_url()
    res = CliRunner().invoke(app, ["train", "--set", f"data.base_url={url}", "--data-dir", str(tmp_path / "data"),
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 1, res.output
    host = url.removeprefix("http://")
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"cannot reach {host}: Connection refused; retrying up to 4 times",
                     f"error: could not download 10 of 10 files (apple, banana, cat and 7 more): cannot reach {host}: "
                     f"Connection refused (gave up after 5 attempts); {dataset.OFFLINE_HINT}"]
    assert len(lines[1]) < 320 and "configs/offline.yaml" in lines[1] and "file://" in lines[1]
    assert not (tmp_path / "run").exists()
