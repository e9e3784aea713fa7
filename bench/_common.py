"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def quickdraw_root() -> Path:
    """The shared Quick, Draw! sample: $DOODLE_QUICKDRAW, else ../shared/quickdraw beside the repo."""
    root = Path(os.environ.get("DOODLE_QUICKDRAW", REPO.parent / "shared" / "quickdraw"))
    if not (root / "full").is_dir():
        sys.exit(f"shared Quick, Draw! sample not found at {root}: set DOODLE_QUICKDRAW")
    return root
