"""doodle.download against a loopback HTTP server that misbehaves on request."""

from __future__ import annotations

import email.utils
import fcntl
import hashlib
import http.server
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from doodle import download as dl
from doodle.categories import FORMATS
from doodle.errors import DoodleError
from helpers import Recorder

FAST = dict(retries=3, backoff=0.001, timeout=5.0)  # tiny backoff: tests must not sleep


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Serves files under server.root; server.cfg says how to misbehave, server.log records requests.

    cfg["script"] lists what to do to successive requests (for paths containing cfg["only"]):
    "fail" (answer fail_status), "drop" (promise the whole body, send half, hang up), "cut" (state
    no size, send half, hang up), "cutline" (the same, cut just after a newline), "errorbody" (a
    JSON error with status 200), "stall" (wait stall_seconds first), "badrange" (answer a Range
    with the file's first bytes, saying so), None (behave). Once it is empty, every request behaves.
    Like Google's bucket, responses carry an ETag and a Last-Modified date (cfg["validators"]) and
    honour Range and If-Range; cfg["throttle"] = (bytes, seconds) sends the body slowly;
    cfg["content_length"] = False never states a size; cfg["failing"] names files that always fail;
    cfg["hook"](entry) runs before each file's reply is sent.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv, cfg = self.server, self.server.cfg
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        entry = {"path": "/" + name, "range": self.headers.get("Range"), "if_range": self.headers.get("If-Range"),
                 "status": None, "sent": 0}
        with srv.lock:
            srv.log.append(entry)
            targeted = cfg["only"] is None or cfg["only"] in name
            action = cfg["script"].pop(0) if targeted and cfg["script"] else None
        if action == "fail" or (cfg["failing"] and any(w in name for w in cfg["failing"])):
            return self._reply(entry, cfg["fail_status"], b"try later")
        if action == "errorbody":
            return self._reply(entry, 200, b'{"error": {"code": 429, "message": "Rate limit exceeded"}}\n')
        file = srv.root / name
        if not file.is_file():
            return self._reply(entry, 404, b"no such object")
        data = file.read_bytes()
        tags = {"ETag": etag(data), "Last-Modified": email.utils.formatdate(file.stat().st_mtime, usegmt=True)}
        tags = {k: v for k, v in tags.items() if k in cfg["validators"]}
        status, start, body = 200, 0, data
        rng = self.headers.get("Range")
        same = self.headers.get("If-Range") in (None, *tags.values()) or not cfg["honour_if_range"]
        if rng and cfg["honour_range"] and same:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            if start >= len(data):
                return self._reply(entry, 416, b"", {"Content-Range": f"bytes */{len(data)}", **tags})
            status, body = 206, data[start:end + 1]
            if action == "badrange":  # a cache that answers some other range than the one asked for
                start, body = 0, data[:len(body)]
        headers = {"Content-Length": str(len(body)), **tags}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
        if action == "stall":
            time.sleep(cfg["stall_seconds"])
        if action in ("drop", "cut", "cutline"):  # send half, hang up
            body = body[:len(body) // 2]
            if action == "cutline":
                body = body[:body.rindex(b"\n") + 1]
            elif action == "cut" and body.endswith(b"\n"):  # mid-line
                body = body[:-1]
        if action in ("cut", "cutline") or not cfg["content_length"]:  # no size stated: the hang-up ends the body
            del headers["Content-Length"]
        if action in ("drop", "cut", "cutline") or not cfg["content_length"]:
            headers["Connection"] = "close"
            self.close_connection = True
        if cfg["hook"]:  # the body is read: the hook may change the file before the client hears back
            cfg["hook"](entry)
        self._reply(entry, status, body, headers)

    def _reply(self, entry, status, body, headers=None):
        entry["status"], entry["sent"] = status, len(body)  # before sending: the client may finish first
        self.send_response(status)
        headers = headers or {"Content-Length": str(len(body))}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        piece, pause = self.server.cfg["throttle"] or (len(body) or 1, 0)
        try:
            for at in range(0, len(body), piece):
                self.wfile.write(body[at:at + piece])
                self.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (or was killed)
            pass


def etag(data: bytes) -> str:
    """A strong ETag for `data`, like Google's bucket (an MD5 in quotes)."""
    return '"%s"' % hashlib.md5(data).hexdigest()


class Server:
    def __init__(self, root: Path, **cfg):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
        self.httpd.root = Path(root)
        self.httpd.cfg = dict(honour_range=True, honour_if_range=True, validators=("ETag", "Last-Modified"),
                              script=[], fail_status=500, failing=(), stall_seconds=0.0, only=None, throttle=None,
                              content_length=True, hook=None)
        self.httpd.cfg.update(cfg)
        self.httpd.log = []
        self.httpd.lock = threading.Lock()
        self.cfg, self.log = self.httpd.cfg, self.httpd.log
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(quickdraw_dir):
    """A server over the committed fixture; tweak `server.cfg` before downloading."""
    srv = Server(quickdraw_dir)
    yield srv
    srv.close()


@pytest.fixture
def tmp_server(tmp_path_factory):
    """A server over an empty folder `server.httpd.root` (not under tmp_path) that the test fills."""
    root = tmp_path_factory.mktemp("remote")
    srv = Server(root)
    yield srv
    srv.close()


def src(quickdraw_dir: Path, fmt: str, word: str) -> Path:
    return quickdraw_dir / "full" / fmt / f"{word}.{FORMATS[fmt]}"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def leave_part(data_dir: Path, fmt: str, word: str, data: bytes, started_from: bytes | None) -> Path:
    """A .part left by an interrupted download of the remote file `started_from` (its ETag remembered)."""
    part = data_dir / fmt / f"{word}.{FORMATS[fmt]}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)
    if started_from is not None:
        meta = {"url": "", "etag": etag(started_from), "last_modified": None}
        (part.parent / f".{word}.{FORMATS[fmt]}.part.json").write_text(json.dumps(meta))
    return part


# ---------------------------------------------------------------------------------------- names

def test_names_and_urls(tmp_path, monkeypatch):
    monkeypatch.delenv("DOODLE_BASE_URL", raising=False)
    assert dl.resolve_base_url() == dl.DEFAULT_BASE_URL
    assert dl.resolve_base_url("http://mirror/x/") == "http://mirror/x"
    assert dl.resolve_base_url(str(tmp_path)) == tmp_path.resolve().as_uri()
    monkeypatch.setenv("DOODLE_BASE_URL", "http://env-mirror")
    assert dl.resolve_base_url() == "http://env-mirror"
    assert dl.resolve_base_url("http://explicit") == "http://explicit"
    assert dl.remote_url("http://h/b", "simplified", "alarm clock") == \
        "http://h/b/full/simplified/alarm%20clock.ndjson"
    assert dl.remote_url("http://h/b/", "numpy_bitmap", "The Eiffel Tower") == \
        "http://h/b/full/numpy_bitmap/The%20Eiffel%20Tower.npy"
    assert dl.local_path(tmp_path, "raw", "alarm clock") == tmp_path / "raw" / "alarm clock.ndjson"
    with pytest.raises(DoodleError, match="ftp"):
        dl.resolve_base_url("ftp://x")
    with pytest.raises(DoodleError, match="existing folder"):
        dl.resolve_base_url(str(tmp_path / "missing"))


def test_unknown_word_or_format_fails_before_any_request(server, tmp_path):
    with pytest.raises(DoodleError) as err:
        dl.download(["cat", "aple", "cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    msg = str(err.value)
    assert "'aple'" in msg and "apple" in msg and "\n" not in msg
    with pytest.raises(DoodleError, match="numpy_bitmap"):
        dl.download(["cat"], fmt="bitmap", data_dir=tmp_path, base_url=server.url, **FAST)
    with pytest.raises(DoodleError, match="max_drawings"):
        dl.download(["cat"], data_dir=tmp_path, base_url=server.url, max_drawings=0, **FAST)
    assert server.log == []
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------- success

@pytest.mark.parametrize("fmt", list(FORMATS))
def test_all_formats_byte_identical(server, tmp_path, quickdraw_dir, fmt):
    rec = Recorder()
    words = ["alarm clock", "cat", "alarm clock"]  # spaces, and a duplicate fetched once
    results = dl.download(words, fmt=fmt, data_dir=tmp_path, base_url=server.url, reporter=rec, **FAST)
    assert [r.word for r in results] == ["alarm clock", "cat"]
    assert sorted(e["path"] for e in server.log) == [f"/full/{fmt}/alarm clock.{FORMATS[fmt]}",
                                                     f"/full/{fmt}/cat.{FORMATS[fmt]}"]  # fetched in parallel
    assert all(e["range"] is None for e in server.log)
    for r in results:
        source = src(quickdraw_dir, fmt, r.word)
        assert r.status == "downloaded" and r.error is None
        assert r.path == tmp_path / fmt / source.name
        assert r.path.read_bytes() == source.read_bytes()
        assert r.bytes == source.stat().st_size
        if fmt == "numpy_bitmap":
            assert r.drawings == np.load(source).shape[0]
        else:
            assert r.drawings == len(source.read_bytes().splitlines())
    # Progress: one start with the size, chunk-sized advances adding up to it, one end.
    key = f"{fmt}/cat"
    mine = [e for e in rec.events if e[0] != "log" and e[1] == key]
    size = src(quickdraw_dir, fmt, "cat").stat().st_size
    assert mine[0] == ("start", key, size, "bytes") and mine[-1] == ("end", key)
    advances = [e[2] for e in mine if e[0] == "update"]
    assert sum(advances) == size and max(advances) <= 64 * 1024
    assert leftovers(tmp_path / fmt) == sorted(
        [f"alarm clock.{FORMATS[fmt]}", f"cat.{FORMATS[fmt]}",
         f".alarm clock.{FORMATS[fmt]}.json", f".cat.{FORMATS[fmt]}.json"])


def test_file_base_and_env_var(tmp_path, quickdraw_dir, server, monkeypatch):
    base = quickdraw_dir.resolve().as_uri()
    res = dl.download(["alarm clock"], fmt="raw", data_dir=tmp_path / "a", base_url=base, **FAST)
    assert res[0].status == "downloaded"
    assert res[0].path.read_bytes() == src(quickdraw_dir, "raw", "alarm clock").read_bytes()
    # file:// has no Range: a limited .npy still reads only what it needs from the local file.
    res = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path / "a", base_url=base, max_drawings=9, **FAST)
    np.testing.assert_array_equal(np.load(res[0].path), np.load(src(quickdraw_dir, "numpy_bitmap", "cat"))[:9])
    monkeypatch.setenv("DOODLE_BASE_URL", server.url)
    res = dl.download(["cat"], data_dir=tmp_path / "b", **FAST)
    assert res[0].status == "downloaded" and [e["path"] for e in server.log] == ["/full/simplified/cat.ndjson"]


# ---------------------------------------------------------------------------------------- failures

def test_404_reports_and_leaves_nothing(server, tmp_path):
    results = dl.download(["ant", "cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, **FAST)
    ant, cat = results
    assert ant.status == "failed" and cat.status == "downloaded"
    assert ant.error == (f"{server.url}/full/numpy_bitmap/ant.npy: not on this server (404); the category is in "
                         f"Google's dataset: check the base URL, or use a mirror that has it")
    assert len([e for e in server.log if e["path"].endswith("ant.npy")]) == 1  # 404 is not retried
    assert leftovers(tmp_path / "numpy_bitmap") == [".cat.npy.json", "cat.npy"]
    with pytest.raises(DoodleError, match="could not download 1 of 2 files: .*ant.npy: not on this server"):
        dl.ensure_downloaded(["ant", "cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, **FAST)
    paths = dl.ensure_downloaded(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, **FAST)
    assert paths == [tmp_path / "numpy_bitmap" / "cat.npy"]


def test_500_then_success(server, tmp_path, quickdraw_dir):
    server.cfg.update(script=["fail"] * 2)
    rec = Recorder()
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, reporter=rec, **FAST)
    assert r.status == "downloaded"
    assert r.path.read_bytes() == src(quickdraw_dir, "simplified", "cat").read_bytes()
    assert [e["status"] for e in server.log] == [500, 500, 200]
    logs = [e[1] for e in rec.events if e[0] == "log"]
    assert len(logs) == 2 and all("retrying simplified/cat.ndjson after HTTP 500" in m for m in logs)


def test_retries_exhausted_and_4xx_not_retried(server, tmp_path):
    server.cfg.update(script=["fail"] * 10, only="cat")
    dog, cat = dl.download(["dog", "cat"], data_dir=tmp_path, base_url=server.url, retries=2, backoff=0.001)
    assert dog.status == "downloaded"  # one file's failure does not stop the others
    assert cat.status == "failed" and "HTTP 500" in cat.error and "gave up after 3 attempts" in cat.error
    assert len([e for e in server.log if "cat" in e["path"]]) == 3
    assert not (tmp_path / "simplified" / "cat.ndjson").exists()
    server.cfg.update(script=["fail"] * 10, fail_status=403)
    server.log.clear()
    [cat] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    assert cat.status == "failed" and "HTTP 403" in cat.error and len(server.log) == 1
    server.cfg.update(script=["fail"], fail_status=429)
    [cat] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    assert cat.status == "downloaded"


def test_timeout_is_retried(server, tmp_path, quickdraw_dir):
    server.cfg.update(script=["stall"], stall_seconds=2.0)
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, retries=2, backoff=0.001, timeout=0.5)
    assert r.status == "downloaded" and len(server.log) == 2
    assert r.path.read_bytes() == src(quickdraw_dir, "simplified", "cat").read_bytes()


def test_bad_npy_fails_cleanly(tmp_server, tmp_path):
    folder = tmp_server.httpd.root / "full" / "numpy_bitmap"
    folder.mkdir(parents=True)
    (folder / "cat.npy").write_bytes(b"<html>not an array</html>" * 10)
    arr = np.arange(20 * 784, dtype=np.uint8).reshape(20, 784)
    np.save(folder / "dog.npy", arr)
    (folder / "dog.npy").write_bytes((folder / "dog.npy").read_bytes()[:-784])  # header promises one row more
    out = tmp_path / "data"
    cat, dog = dl.download(["cat", "dog"], fmt="numpy_bitmap", data_dir=out, base_url=tmp_server.url, **FAST)
    assert cat.status == dog.status == "failed"
    assert "not a .npy file" in cat.error and "bad .npy" in dog.error
    cat, dog = dl.download(["cat", "dog"], fmt="numpy_bitmap", data_dir=out, base_url=tmp_server.url,
                           max_drawings=50, **FAST)
    assert cat.status == dog.status == "failed"
    assert "not a .npy file" in cat.error and "bad .npy" in dog.error
    assert leftovers(out) == []


# ---------------------------------------------------------------------------------------- resume

def test_drop_then_resume_with_range(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "numpy_bitmap", "cat").read_bytes()
    server.cfg.update(script=["drop"])
    [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, **FAST)
    assert r.status == "resumed" and r.drawings == np.load(src(quickdraw_dir, "numpy_bitmap", "cat")).shape[0]
    assert r.path.read_bytes() == source
    half = len(source) // 2
    assert [(e["range"], e["status"], e["sent"]) for e in server.log] == [
        (None, 200, half), (f"bytes={half}-", 206, len(source) - half)]
    assert not (tmp_path / "numpy_bitmap" / "cat.npy.part").exists()


def test_failed_drop_keeps_part_and_next_run_resumes(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "raw", "cat").read_bytes()
    server.cfg.update(script=["drop"])
    [r] = dl.download(["cat"], fmt="raw", data_dir=tmp_path, base_url=server.url, retries=0, backoff=0.001)
    part = tmp_path / "raw" / "cat.ndjson.part"
    assert r.status == "failed" and "connection dropped" in r.error
    assert not r.path.exists() and part.read_bytes() == source[:len(source) // 2]
    server.log.clear()
    [r] = dl.download(["cat"], fmt="raw", data_dir=tmp_path, base_url=server.url, **FAST)
    assert r.status == "resumed" and r.path.read_bytes() == source and r.drawings == len(source.splitlines())
    assert [e["range"] for e in server.log] == [f"bytes={len(source) // 2}-"]


def test_attempts_that_make_progress_do_not_use_up_retries(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "numpy_bitmap", "dog").read_bytes()
    server.cfg.update(script=["drop"] * 4)
    [r] = dl.download(["dog"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, retries=1,
                      backoff=0.001)
    assert r.status == "resumed" and r.path.read_bytes() == source
    assert [e["status"] for e in server.log] == [200, 206, 206, 206, 206]
    server.cfg.update(script=["fail", "fail"])  # no progress: the second failure is the last
    [r] = dl.download(["dog"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, retries=1,
                      backoff=0.001, force=True)
    assert r.status == "failed" and "gave up after 2 attempts" in r.error


def test_server_ignoring_range_restarts_cleanly(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "simplified", "cat").read_bytes()
    part = leave_part(tmp_path, "simplified", "cat", b"garbage that is not a prefix of the file\n", source)
    server.cfg.update(honour_range=False)
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    assert [(e["range"], e["status"]) for e in server.log] == [("bytes=41-", 200)]
    assert r.status == "downloaded" and r.path.read_bytes() == source and not part.exists()
    assert leftovers(tmp_path) == [".cat.ndjson.json", "cat.ndjson"]


def test_partial_that_is_already_whole(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "simplified", "cat").read_bytes()
    leave_part(tmp_path, "simplified", "cat", source, source)  # killed between the last byte and the rename
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    assert [e["status"] for e in server.log] == [416]
    assert r.status == "resumed" and r.path.read_bytes() == source and r.drawings == len(source.splitlines())


# ---------------------------------------------------------------------------------------- limits

def test_max_drawings_ndjson(server, tmp_path, quickdraw_dir):
    lines = src(quickdraw_dir, "raw", "apple").read_bytes().splitlines(keepends=True)
    assert len(lines) > 7
    [r] = dl.download(["apple"], fmt="raw", data_dir=tmp_path, base_url=server.url, max_drawings=7, **FAST)
    assert r.status == "downloaded" and r.drawings == 7
    assert r.path.read_bytes() == b"".join(lines[:7])
    meta = json.loads((tmp_path / "raw" / ".apple.ndjson.json").read_text())
    assert meta == {"url": f"{server.url}/full/raw/apple.ndjson", "bytes": r.bytes, "max_drawings": 7, "drawings": 7}
    # More than the file holds: the whole file, recorded as complete.
    [r] = dl.download(["apple"], fmt="raw", data_dir=tmp_path, base_url=server.url, max_drawings=1000, **FAST)
    assert r.drawings == len(lines) and r.path.read_bytes() == b"".join(lines)
    assert json.loads((tmp_path / "raw" / ".apple.ndjson.json").read_text())["max_drawings"] is None


@pytest.mark.parametrize("honour_range", [True, False])
def test_max_drawings_npy(server, tmp_path, quickdraw_dir, honour_range):
    server.cfg.update(honour_range=honour_range)
    source = src(quickdraw_dir, "numpy_bitmap", "cat")
    [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, max_drawings=10, **FAST)
    got = np.load(r.path, allow_pickle=False)
    assert r.status == "downloaded" and r.drawings == 10 and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.load(source)[:10])
    [req] = server.log
    assert req["range"] == "bytes=0-%d" % (128 + 10 * 784 - 1)
    if honour_range:  # only the header and ten rows crossed the wire
        assert req["sent"] == 128 + 10 * 784
    assert leftovers(tmp_path / "numpy_bitmap") == [".cat.npy.json", "cat.npy"]


def test_max_drawings_npy_wider_rows_need_a_second_range(tmp_server, tmp_path):
    folder = tmp_server.httpd.root / "full" / "numpy_bitmap"
    folder.mkdir(parents=True)
    arr = np.random.default_rng(0).random((40, 500)).astype(np.float32)  # 2000-byte rows, not 784
    np.save(folder / "cat.npy", arr)
    [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=tmp_server.url, max_drawings=6,
                      **FAST)
    np.testing.assert_array_equal(np.load(r.path), arr[:6])
    assert [e["range"] for e in tmp_server.log] == ["bytes=0-%d" % (128 + 6 * 784 - 1),
                                                    "bytes=%d-%d" % (128 + 6 * 784, 128 + 6 * 2000 - 1)]
    tmp_server.cfg.update(script=["drop"])  # a drop mid-way: the attempt starts again and succeeds
    [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=tmp_server.url, max_drawings=20,
                      **FAST)
    np.testing.assert_array_equal(np.load(r.path), arr[:20])


def test_npy_limit_beyond_rows_is_the_whole_file(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "numpy_bitmap", "eye")  # 20 rows
    [r] = dl.download(["eye"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, max_drawings=5000,
                      **FAST)
    assert r.drawings == 20 and r.path.read_bytes() == source.read_bytes()
    [r] = dl.download(["eye"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=server.url, **FAST)
    assert r.status == "skipped" and len(server.log) == 1


def test_skip_sidecar_limits_and_force(server, tmp_path, quickdraw_dir):
    lines = src(quickdraw_dir, "simplified", "cat").read_bytes().splitlines(keepends=True)

    def get(n=None, force=False):
        [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, max_drawings=n, force=force, **FAST)
        return r.status, r.drawings, len(server.log)

    assert get(5) == ("downloaded", 5, 1)
    assert get(3) == ("skipped", 5, 1)  # fewer than we have: nothing fetched
    assert get(5) == ("skipped", 5, 1)
    assert get(8) == ("downloaded", 8, 2)  # more than we have: fetched again
    assert (tmp_path / "simplified" / "cat.ndjson").read_bytes() == b"".join(lines[:8])
    n = len(lines)  # 12 in the fixture
    assert get() == ("downloaded", n, 3)  # the whole file
    assert get() == ("skipped", n, 3)
    assert get(3) == ("skipped", n, 3)
    assert get(force=True) == ("downloaded", n, 4)
    assert get(4, force=True) == ("downloaded", 4, 5)
    # A sidecar that does not match the file (replacement killed before its rename): fetch again.
    path = tmp_path / "simplified" / "cat.ndjson"
    path.write_bytes(b"".join(lines[:2]))
    assert get(2) == ("downloaded", 2, 6)
    # No sidecar at all: a whole file someone put there.
    (tmp_path / "simplified" / ".cat.ndjson.json").unlink()
    assert get(10) == ("skipped", None, 6)


def test_limit_served_from_a_bigger_partial(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "simplified", "cat").read_bytes()
    lines = source.splitlines(keepends=True)
    part = leave_part(tmp_path, "simplified", "cat", source[:len(source) * 2 // 3], source)  # an interrupted download
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, max_drawings=4, **FAST)
    assert r.drawings == 4 and r.path.read_bytes() == b"".join(lines[:4]) and server.log == []
    assert part.exists()  # kept for the full download
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    assert r.status == "resumed" and r.path.read_bytes() == source
    assert server.log[0]["range"] == f"bytes={len(source) * 2 // 3}-"


def test_force_ignores_an_old_partial(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "simplified", "cat").read_bytes()
    part = tmp_path / "simplified" / "cat.ndjson.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b'{"not": "the same file"}\n')
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, force=True, **FAST)
    assert r.status == "downloaded" and r.path.read_bytes() == source
    assert [e["range"] for e in server.log] == [None]


def test_wrong_range_answer_restarts_from_zero(server, tmp_path, quickdraw_dir):
    source = src(quickdraw_dir, "simplified", "cat").read_bytes()
    leave_part(tmp_path, "simplified", "cat", source[:5000], source)
    server.cfg.update(script=["badrange"])
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)
    assert [(e["range"], e["status"]) for e in server.log] == [("bytes=5000-", 206), (None, 200)]
    assert r.status == "downloaded" and r.path.read_bytes() == source


def test_max_drawings_npy_header_longer_than_guessed(tmp_server, tmp_path):
    folder = tmp_server.httpd.root / "full" / "numpy_bitmap"
    folder.mkdir(parents=True)
    dtype = np.dtype([(f"a_rather_long_field_name_{i:03d}", np.uint8) for i in range(100)])  # a ~4 KB header
    arr = np.arange(5 * 100, dtype=np.uint8).view(dtype)
    np.save(folder / "cat.npy", arr)
    assert (folder / "cat.npy").stat().st_size - 5 * 100 > 128 + 784
    [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=tmp_server.url, max_drawings=1,
                      **FAST)
    np.testing.assert_array_equal(np.load(r.path), arr[:1])


def test_unresolvable_host_says_so(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    rec = Recorder()
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url="http://quickdraw.invalid", retries=1, backoff=0.001,
                      reporter=rec)
    assert r.status == "failed" and r.unreachable
    assert r.error == ("http://quickdraw.invalid/full/simplified/cat.ndjson: cannot resolve quickdraw.invalid: "
                       "Name or service not known (gave up after 2 attempts)")
    assert rec.events == [("log", "cannot resolve quickdraw.invalid: Name or service not known; retrying up to 1 time")]
    assert leftovers(tmp_path) == []


def test_a_server_that_cannot_be_reached_is_tried_once_not_once_per_file(server, tmp_path, monkeypatch):
    """Offline, `download --all` used to spend every file's retries on the same dead server (~11 min for 345)."""
    words = ["cat", "dog", "apple", "banana", "bicycle", "fish"]
    [kept] = dl.download(["cat"], data_dir=tmp_path, base_url=server.url, **FAST)  # complete before the outage
    assert kept.status == "downloaded"
    with socket.socket() as s:  # a loopback port nobody listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    connects = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connects.append(a) or real(*a, **k))
    rec = Recorder()
    results = dl.download(words, data_dir=tmp_path, base_url=dead, jobs=2, reporter=rec, **FAST)
    assert len(connects) <= 2 * 4  # the two files that ran at once, 4 attempts each; not 5 x 4
    assert [r.status for r in results] == ["skipped"] + ["failed"] * 5  # what is on disk stays good
    # One cause, said once: the same reason for every file, and one retry line for the two that ran at once.
    host = dead.removeprefix("http://")
    assert {r.reason for r in results[1:]} == {f"cannot reach {host}: Connection refused (gave up after 4 attempts)"}
    assert all(r.unreachable for r in results[1:]) and not results[0].unreachable
    assert [e for e in rec.events if e[0] == "log"] == [
        ("log", f"cannot reach {host}: Connection refused; retrying up to 3 times")]
    assert leftovers(tmp_path) == [".cat.ndjson.json", "cat.ndjson"]  # no .part, lock or temporary


def test_a_file_that_fails_on_its_own_does_not_stop_the_others(tmp_server, tmp_path):
    (tmp_server.httpd.root / "full" / "simplified").mkdir(parents=True)
    (tmp_server.httpd.root / "full" / "simplified" / "dog.ndjson").write_bytes(tiny_ndjson("dog", 3))
    tmp_server.cfg["failing"] = ("cat.ndjson",)  # HTTP 500 every time: a server problem with one file
    cat, dog = dl.download(["cat", "dog"], data_dir=tmp_path, base_url=tmp_server.url, jobs=1, **FAST)
    assert cat.status == "failed" and "HTTP 500" in cat.error and "not tried" not in cat.error
    assert dog.status == "downloaded"


# ---------------------------------------------------------------------------------------- what is kept is checked
# Generated files on a tmp_server: these run without the shared sample.

def tiny_ndjson(word: str, n: int, seed: int = 0) -> bytes:
    """`n` small drawing records in Google's layout, one per line (3-digit coordinates: same size for any seed)."""
    rng = np.random.default_rng(seed)
    rows = [json.dumps({"word": word, "countrycode": "US", "timestamp": "2017-03-01 00:00:00.00000 UTC",
                        "recognized": True, "key_id": str(4_000_000 + i),
                        "drawing": [[sorted(rng.integers(100, 256, 4).tolist()), rng.integers(100, 256, 4).tolist()]
                                    for _ in range(2)]})
            for i in range(n)]
    return "".join(r + "\n" for r in rows).encode()


def tiny_npy(rows: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).integers(0, 256, (rows, 784), dtype=np.uint8))
    return buf.getvalue()


def put(server: Server, fmt: str, word: str, data: bytes, mtime: float | None = None) -> bytes:
    """Place `data` as the remote file of `word` (mtime sets its Last-Modified)."""
    path = server.httpd.root / "full" / fmt / f"{word}.{FORMATS[fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return data


@pytest.mark.parametrize("action, honour_range, content_length", [
    ("cut", True, True),  # cut mid-line: the bytes after it are asked for (206) and appended
    ("cutline", True, True),  # cut just after a newline: looks whole, but the server has more
    ("cut", False, True),  # Range ignored, a size stated on the 200: fetched again
    ("cut", False, False),  # neither Range nor any size: the body ends mid-line, fetched again
])
def test_cut_without_content_length_is_never_kept(tmp_server, tmp_path, action, honour_range, content_length):
    source = put(tmp_server, "simplified", "cat", tiny_ndjson("cat", 60))
    tmp_server.cfg.update(script=[action], honour_range=honour_range, content_length=content_length)
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=tmp_server.url, retries=0, backoff=0.001)
    assert r.status == "failed" and not r.path.exists()  # no retries: the cut body stays a .part
    assert "\n" not in r.error and r.error.startswith(r.url)
    tmp_server.log.clear()
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=tmp_server.url, **FAST)
    assert r.status in ("resumed", "downloaded") and r.path.read_bytes() == source and r.drawings == 60
    assert leftovers(tmp_path) == [".cat.ndjson.json", "cat.ndjson"]
    if honour_range:  # the rest of the file, asked for with the validator the .part was started with
        assert r.status == "resumed" and server_ranges(tmp_server)[0][1] == etag(source)


def server_ranges(server: Server) -> list[tuple]:
    return [(e["range"], e["if_range"], e["status"]) for e in server.log]


def test_cut_file_on_disk_is_not_skipped(tmp_server, tmp_path):
    """What an older doodle kept after a cut connection is checked on the next run and fetched again."""
    source = put(tmp_server, "simplified", "cat", tiny_ndjson("cat", 40))
    npy = put(tmp_server, "numpy_bitmap", "dog", tiny_npy(20))
    for fmt, word, data, cut in (("simplified", "cat", source, 7084 % len(source)), ("numpy_bitmap", "dog", npy, 5000)):
        path = dl.local_path(tmp_path, fmt, word)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[:cut])
        (path.parent / f".{path.name}.json").write_text(json.dumps(
            {"url": "", "bytes": cut, "max_drawings": None, "drawings": 20}))  # a sidecar vouching for it
        rec = Recorder()
        [r] = dl.download([word], fmt=fmt, data_dir=tmp_path, base_url=tmp_server.url, reporter=rec, **FAST)
        assert r.status == "downloaded" and path.read_bytes() == data
        [msg] = [e[1] for e in rec.events if e[0] == "log"]
        assert str(path) in msg and "cut off" in msg and "fetching it again" in msg
    # the same without a sidecar (a file put there by hand)
    path = dl.local_path(tmp_path, "simplified", "cat")
    path.write_bytes(source[:-1])
    (path.parent / ".cat.ndjson.json").unlink()
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=tmp_server.url, **FAST)
    assert r.status == "downloaded" and path.read_bytes() == source
    tmp_server.log.clear()
    assert [r.status for r in dl.download(["cat"], data_dir=tmp_path, base_url=tmp_server.url, **FAST)] == ["skipped"]
    assert tmp_server.log == []


DRAWING = tiny_ndjson("cat", 3)
BAD_BODIES = {  # what a server sent with status 200 -> what the one-line error says
    b'{"error": {"code": 403, "message": "quota exceeded"}}': "not Quick, Draw! drawings",
    b"<html><body>Service unavailable</body></html>\n": "not Quick, Draw! drawings",
    DRAWING + b'{"status": "backend error"}\n': "last line that is not a drawing record",
    DRAWING[:-1]: "ends in the middle of a line",
    b"": "is empty",
}


@pytest.mark.parametrize("body", list(BAD_BODIES), ids=["json-error", "html", "bad-last-line", "no-newline", "empty"])
@pytest.mark.parametrize("limit", [None, 100])
def test_wrong_body_with_status_200_is_not_data(tmp_server, tmp_path, body, limit):
    put(tmp_server, "simplified", "cat", body)
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=tmp_server.url, max_drawings=limit, **FAST)
    assert r.status == "failed" and BAD_BODIES[body] in r.error
    assert r.error.startswith(f"{tmp_server.url}/full/simplified/cat.ndjson: ") and "\n" not in r.error
    assert [e["status"] for e in tmp_server.log] == [200]  # the server stated its size: no point retrying
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["simplified", "numpy_bitmap"])
def test_json_error_body_is_not_data(tmp_server, tmp_path, fmt):
    """The scripted server answers one request with a JSON error and status 200; the next run works."""
    source = put(tmp_server, fmt, "cat", tiny_ndjson("cat", 10) if fmt == "simplified" else tiny_npy(10))
    for limit in (None, 5):
        tmp_server.cfg.update(script=["errorbody"])
        [r] = dl.download(["cat"], fmt=fmt, data_dir=tmp_path, base_url=tmp_server.url, max_drawings=limit, **FAST)
        assert r.status == "failed" and ("not Quick, Draw! drawings" in r.error or "not a .npy file" in r.error)
        assert leftovers(tmp_path) == []
    [r] = dl.download(["cat"], fmt=fmt, data_dir=tmp_path, base_url=tmp_server.url, **FAST)
    assert r.status == "downloaded" and r.path.read_bytes() == source


@pytest.mark.parametrize("server_mode", [
    dict(),  # If-Range honoured: the changed file comes whole (200)
    dict(honour_if_range=False),  # Range honoured, If-Range ignored: the 206's new ETag gives it away
    dict(validators=("Last-Modified",)),  # If-Range with the date
    dict(validators=()),  # no validator at all: nothing to resume with
    dict(honour_range=False),
])
@pytest.mark.parametrize("fmt", ["simplified", "numpy_bitmap"])
def test_partial_of_a_changed_file_is_not_spliced(tmp_server, tmp_path, server_mode, fmt):
    make = (lambda seed: tiny_ndjson("cat", 80, seed)) if fmt == "simplified" else (lambda seed: tiny_npy(30, seed))
    old = put(tmp_server, fmt, "cat", make(1), mtime=1_500_000_000)
    tmp_server.cfg.update(script=["drop"], **server_mode)
    [r] = dl.download(["cat"], fmt=fmt, data_dir=tmp_path, base_url=tmp_server.url, retries=0, backoff=0.001)
    resumable = server_mode.get("validators") != ()  # with nothing to resume it by, a .part is removed at once
    assert r.status == "failed" and (tmp_path / fmt / f"cat.{FORMATS[fmt]}.part").exists() == resumable
    new = put(tmp_server, fmt, "cat", make(2), mtime=1_600_000_000)
    assert len(new) == len(old) != len(old) // 2  # the same size: only the validators tell them apart
    tmp_server.log.clear()
    [r] = dl.download(["cat"], fmt=fmt, data_dir=tmp_path, base_url=tmp_server.url, **FAST)
    assert r.status == "downloaded" and r.path.read_bytes() == new
    assert leftovers(tmp_path) == sorted([f".cat.{FORMATS[fmt]}.json", f"cat.{FORMATS[fmt]}"])
    assert server_ranges(tmp_server)[-1][2] == 200 and all(e[2] in (200, 206) for e in server_ranges(tmp_server))


def test_unchanged_file_resumes_with_if_range(tmp_server, tmp_path):
    source = put(tmp_server, "numpy_bitmap", "cat", tiny_npy(30), mtime=1_500_000_000)
    tmp_server.cfg.update(script=["drop"], validators=("Last-Modified",))
    [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=tmp_server.url, **FAST)
    assert r.status == "resumed" and r.path.read_bytes() == source
    assert server_ranges(tmp_server) == [(None, None, 200), (f"bytes={len(source) // 2}-",
                                                             "Fri, 14 Jul 2017 02:40:00 GMT", 206)]


def test_limited_npy_from_a_file_that_changes_between_its_ranges(tmp_server, tmp_path):
    """Wider rows need a second Range request; if the file changes in between, the fetch starts again."""
    wide = [np.random.default_rng(s).random((40, 500)).astype(np.float32) for s in (1, 2)]
    target = tmp_server.httpd.root / "full" / "numpy_bitmap" / "cat.npy"
    target.parent.mkdir(parents=True)
    buf = io.BytesIO()
    np.save(buf, wide[0])
    target.write_bytes(buf.getvalue())

    def change_once(entry):
        if len(tmp_server.log) == 1:
            np.save(target, wide[1])
            os.utime(target, (1_600_000_000, 1_600_000_000))

    tmp_server.cfg.update(hook=change_once)
    [r] = dl.download(["cat"], fmt="numpy_bitmap", data_dir=tmp_path, base_url=tmp_server.url, max_drawings=6,
                      **FAST)
    np.testing.assert_array_equal(np.load(r.path), wide[1][:6])
    assert r.path.stat().st_size == 128 + 6 * 2000  # exactly what its header declares
    assert [e[2] for e in server_ranges(tmp_server)] == [206, 200, 206, 206]


# ---------------------------------------------------------------------------------------- processes
# Real `doodle download` processes against a throttled loopback server: locks, kill -9 and Ctrl-C.

def doodle(*args) -> list[str]:
    return [sys.executable, "-m", "doodle", "download", *map(str, args)]


def spawn(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(doodle(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def nothing_looks_complete_unless_identical(data_dir: Path, fmt: str, sources: dict[str, bytes]) -> None:
    """After any interruption: a target is absent or byte-identical; a .part is a prefix of its source."""
    ext = FORMATS[fmt]
    for word, data in sources.items():
        path = data_dir / fmt / f"{word}.{ext}"
        if path.exists():
            assert path.read_bytes() == data, f"{path} looks complete but differs from the source"
        part = path.with_name(path.name + ".part")
        if part.exists():
            assert data.startswith(part.read_bytes()), f"{part} is not a prefix of the source"


def test_two_processes_same_file(tmp_server, tmp_path):
    source = put(tmp_server, "raw", "cat", tiny_ndjson("cat", 120))
    tmp_server.cfg.update(throttle=(2048, 0.02))  # ~0.25 s for the file: the second process comes in mid-way
    args = ("cat", "--format", "raw", "--data-dir", tmp_path / "data", "--base-url", tmp_server.url, "--json")
    procs = [spawn(*args, cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=30) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    statuses = sorted(json.loads(o[0])[0]["status"] for o in outs)
    assert statuses == ["downloaded", "skipped"]  # one fetched it, the other waited and found it complete
    assert [e["range"] for e in tmp_server.log] == [None]
    assert (tmp_path / "data" / "raw" / "cat.ndjson").read_bytes() == source
    assert leftovers(tmp_path / "data") == [".cat.ndjson.json", "cat.ndjson"]


def test_a_held_lock_makes_the_download_wait(tmp_server, tmp_path):
    """Another holder of the file's lock (here a second open file description): wait, say so, then fetch."""
    source = put(tmp_server, "simplified", "cat", tiny_ndjson("cat", 10))
    lock = tmp_path / "simplified" / ".cat.ndjson.lock"
    lock.parent.mkdir()
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"     12345\n", 0)
    rec, results = Recorder(), []
    worker = threading.Thread(target=lambda: results.extend(
        dl.download(["cat"], data_dir=tmp_path, base_url=tmp_server.url, reporter=rec, **FAST)))
    worker.start()
    deadline = time.monotonic() + 5
    while not rec.events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.events == [("log", "simplified/cat.ndjson: another doodle download (pid 12345) is fetching it; "
                                  "waiting for it")]
    assert tmp_server.log == [] and worker.is_alive()
    lock.unlink()  # what a holder does on its way out: the waiter must lock the new file, not this one
    os.close(fd)
    worker.join(timeout=5)
    assert [r.status for r in results] == ["downloaded"] and results[0].path.read_bytes() == source
    assert leftovers(tmp_path) == [".cat.ndjson.json", "cat.ndjson"]


def test_what_a_killed_run_left_is_cleaned(tmp_server, tmp_path):
    """A stale lock file (its process gone) does not block; stale temporaries of the file are removed."""
    source = put(tmp_server, "simplified", "cat", tiny_ndjson("cat", 10))
    folder = tmp_path / "simplified"
    folder.mkdir()
    left = [".cat.ndjson.lock", ".cat.ndjson.k2j4.tmp", "..cat.ndjson.json.k2j4.tmp", ".cat.ndjson.part.json"]
    for name in left + [".dog.ndjson.x9q1.tmp"]:
        (folder / name).write_text("     99999\n")
    [r] = dl.download(["cat"], data_dir=tmp_path, base_url=tmp_server.url, **FAST)
    assert r.status == "downloaded" and r.path.read_bytes() == source
    assert leftovers(folder) == [".cat.ndjson.json", ".dog.ndjson.x9q1.tmp", "cat.ndjson"]  # another file's: kept


def test_kill_9_at_random_points_then_resume(tmp_server, tmp_path):
    rng = random.Random(11)
    sources = {"simplified": {w: put(tmp_server, "simplified", w, tiny_ndjson(w, 60, i))
                              for i, w in enumerate(["cat", "dog"])},
               "numpy_bitmap": {w: put(tmp_server, "numpy_bitmap", w, tiny_npy(18, i))
                                for i, w in enumerate(["cat", "dog"])}}
    tmp_server.cfg.update(throttle=(1024, 0.01))  # ~0.15 s per file, one after the other
    data = tmp_path / "data"

    def args(fmt, *more):
        return (*sources[fmt], "--format", fmt, "--data-dir", data, "--base-url", tmp_server.url, "--jobs", 1, *more)

    for i in range(3):
        proc = spawn(*args(list(sources)[i % 2]), cwd=tmp_path)
        time.sleep(rng.uniform(0.15, 0.5))  # start-up takes ~0.2 s: kills land before, during and between files
        proc.kill()
        proc.communicate()
        for fmt in sources:
            nothing_looks_complete_unless_identical(data, fmt, sources[fmt])
    done = {(fmt, w) for fmt in sources for w in sources[fmt] if dl.local_path(data, fmt, w).exists()}
    tmp_server.log.clear()
    procs = {fmt: spawn(*args(fmt, "--json"), cwd=tmp_path) for fmt in sources}
    for fmt, proc in procs.items():
        out, errs = proc.communicate(timeout=30)
        assert proc.returncode == 0, errs
        skipped = {(fmt, r["word"]) for r in json.loads(out) if r["status"] == "skipped"}
        assert skipped == {d for d in done if d[0] == fmt}  # complete files are not fetched again
        for word, source in sources[fmt].items():
            assert dl.local_path(data, fmt, word).read_bytes() == source
    assert {tuple(e["path"].split("/")[2:]) for e in tmp_server.log} == {
        (fmt, dl.local_path(data, fmt, w).name) for fmt in sources for w in sources[fmt]} - {
        (fmt, dl.local_path(data, fmt, w).name) for fmt, w in done}
    assert leftovers(data) == sorted(f"{pre}{w}.{ext}{post}" for w in ("cat", "dog") for ext in ("ndjson", "npy")
                                     for pre, post in (("", ""), (".", ".json")))


def test_ctrl_c_stops_every_worker_and_the_rerun_resumes(tmp_server, tmp_path):
    words = ["ant", "bat", "bee", "cat", "cow", "dog"]
    sources = {w: put(tmp_server, "simplified", w, tiny_ndjson(w, 60, i)) for i, w in enumerate(words)}
    tmp_server.cfg.update(throttle=(1024, 0.02))  # ~0.3 s per file, 2 at a time: ~1 s in all
    args = (*words, "--data-dir", tmp_path / "data", "--base-url", tmp_server.url, "--jobs", 2)
    proc = spawn(*args, cwd=tmp_path)
    deadline = time.monotonic() + 10
    while len(tmp_server.log) < 2 and time.monotonic() < deadline:  # both workers are fetching
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, errs = proc.communicate(timeout=10)
    assert proc.returncode == 130 and b"interrupted" in errs and b"Traceback" not in errs
    fetched = {e["path"] for e in tmp_server.log}
    assert len(fetched) < len(words)  # the queued files were not started after Ctrl-C
    nothing_looks_complete_unless_identical(tmp_path / "data", "simplified", sources)
    tmp_server.log.clear()
    tmp_server.cfg.update(throttle=None)
    proc = spawn(*args, cwd=tmp_path)
    assert proc.wait(timeout=30) == 0
    assert all(dl.local_path(tmp_path / "data", "simplified", w).read_bytes() == d for w, d in sources.items())
    assert sum(e["range"] is not None for e in tmp_server.log) >= 1  # the interrupted files resumed


# ---------------------------------------------------------------------------------------- all 345

def test_all_345_categories(tmp_server, tmp_path):
    from typer.testing import CliRunner

    from doodle.categories import CATEGORIES
    from doodle.cli import app

    sources = {w: put(tmp_server, "simplified", w, tiny_ndjson(w, 2, i)) for i, w in enumerate(CATEGORIES)}
    missing, broken = ["ant", "The Mona Lisa"], ["zebra", "yoga", "zigzag"]
    for w in missing:
        (tmp_server.httpd.root / "full" / "simplified" / f"{w}.ndjson").unlink()
    put(tmp_server, "simplified", "cow", b"<html>Service unavailable</html>\n")
    tmp_server.cfg.update(failing=[f"/{w}.ndjson" for w in broken])
    data = tmp_path / "data"
    run = lambda: CliRunner().invoke(app, ["download", "--all", "--data-dir", str(data), "--base-url",  # noqa: E731
                                           tmp_server.url, "--jobs", "8", "--retries", "0"])
    res = run()
    assert res.exit_code == 1, res.output
    assert "downloaded " in res.stdout and " 339 " in res.stdout  # a summary, not 345 rows
    assert "aircraft carrier" not in res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3  # one line per cause: the 404s, the HTML page, the 500s
    assert any("3 files failed: HTTP 500 (gave up after 1 attempt): yoga, zebra, zigzag" in e for e in errors)
    assert any("cow.ndjson: what the server sent is not Quick, Draw! drawings" in e for e in errors)
    assert any("2 files failed: not on this server (404); the category is in Google's dataset" in e
               and e.endswith(": ant, The Mona Lisa") for e in errors)
    assert "6 of 345 files failed" in res.stderr
    ok = [w for w in CATEGORIES if w not in missing + broken + ["cow"]]
    assert all(dl.local_path(data, "simplified", w).read_bytes() == sources[w] for w in ok)
    # The server mended: only the failed six are fetched; then nothing at all.
    for w in missing + ["cow"]:
        put(tmp_server, "simplified", w, sources[w])
    tmp_server.cfg.update(failing=())
    tmp_server.log.clear()
    assert run().exit_code == 0
    assert sorted(e["path"] for e in tmp_server.log) == sorted(
        f"/full/simplified/{w}.ndjson" for w in missing + broken + ["cow"])
    tmp_server.log.clear()
    res = run()
    assert res.exit_code == 0 and tmp_server.log == [] and "skipped " in res.stdout and " 345 " in res.stdout
    assert all(dl.local_path(data, "simplified", w).read_bytes() == d for w, d in sources.items())
    assert len(leftovers(data)) == 2 * 345  # each file and its sidecar, nothing else


def test_overall_progress_and_at_most_jobs_bars(tmp_server, tmp_path):
    words = ["ant", "bat", "bee", "cat", "cow", "dog", "eye"]
    sizes = {w: len(put(tmp_server, "simplified", w, tiny_ndjson(w, 30, i))) for i, w in enumerate(words)}
    tmp_server.cfg.update(throttle=(2048, 0.005), failing=["/eye.ndjson"])
    rec = Recorder()
    results = dl.download(words, data_dir=tmp_path, base_url=tmp_server.url, reporter=rec, jobs=3, retries=0)
    assert [r.status for r in results] == ["downloaded"] * 6 + ["failed"]
    overall = [e for e in rec.events if e[0] != "log" and e[1] == dl.OVERALL]
    assert overall[0] == ("start", dl.OVERALL, len(words), "files") and overall[-1] == ("end", dl.OVERALL)
    assert sum(e[2] for e in overall if e[0] == "update") == len(words)  # one advance per file
    assert rec.fields[-1]["received"] == sum(sizes.values()) - sizes["eye"] and rec.fields[-1]["failed"] == 1
    active = peak = 0
    for e in rec.events:
        if e[0] in ("start", "end") and e[1] != dl.OVERALL:
            active += 1 if e[0] == "start" else -1
            peak = max(peak, active)
    assert peak == 3  # a bar per running file, never one per file asked
    with pytest.raises(DoodleError, match="jobs must be a whole number of at least 1"):
        dl.download(words, data_dir=tmp_path, base_url=tmp_server.url, jobs=0)
