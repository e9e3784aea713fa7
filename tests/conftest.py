"""Shared fixtures: where the shared Quick, Draw! sample lives, and a loopback static file server."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def quickdraw_root() -> Path:
    """The shared Quick, Draw! sample: $DOODLE_QUICKDRAW, else ../shared/quickdraw beside the repo."""
    return Path(os.environ.get("DOODLE_QUICKDRAW", REPO.parent / "shared" / "quickdraw"))


@pytest.fixture(scope="session")
def quickdraw_dir() -> Path:
    root = quickdraw_root()
    if not (root / "full").is_dir():
        pytest.skip(f"shared Quick, Draw! sample not found at {root} (set DOODLE_QUICKDRAW)")
    return root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="session")
def static_server(quickdraw_dir):
    """Serve the shared sample on 127.0.0.1 like `python -m http.server` (which ignores Range).

    Yields the base URL; `<base>/full/<format>/<word>.<ext>` is Google's bucket layout.
    """
    handler = functools.partial(_QuietHandler, directory=str(quickdraw_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- doodle play


@pytest.fixture(scope="session")
def play_model(tmp_path_factory) -> Path:
    """A small model of the built-in offline shapes (a few seconds), good enough to call a drawn circle a circle."""
    from doodle.train import train

    root = tmp_path_factory.mktemp("play-model")
    result = train(REPO / "configs" / "offline.yaml", ["data.per_category=300", "train.epochs=4", "model.hidden=[64]"],
                   data_dir=root / "data", out=root / "run", workers=1)
    return Path(result.run)


def pytest_terminal_summary(terminalreporter):
    """List the files tests kept for people to look at (screenshots), so CI logs show where they are."""
    paths = [value for reports in terminalreporter.stats.values() for report in reports
             for name, value in getattr(report, "user_properties", ()) if name == "artifact"]
    if paths:
        terminalreporter.section("artifacts")
        for path in dict.fromkeys(paths):
            terminalreporter.write_line(str(path))

