"""doodle.heap: numpy's temporaries reuse freed memory instead of faulting in fresh pages.

Measured by page faults, not time: the same rasterising loop in two fresh processes, with and without
the tuning. Faults are counted by the kernel, so the comparison holds on a busy machine.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from doodle import heap

LOOP = """
import json, resource, sys
from pathlib import Path
import doodle.heap
if sys.argv[1] == "tuned":
    assert doodle.heap.keep_freed_memory()
else:  # rasterize_batch would tune malloc itself: leave it as glibc has it
    doodle.heap.keep_freed_memory = lambda: False
from doodle.rasterpool import rasterize_batch
drawings = [json.loads(line)["drawing"] for p in sorted(Path(sys.argv[2]).glob("*.ndjson"))
            for line in open(p) if line.strip()]
rasterize_batch(drawings[:64])  # warm: imports, first arrays
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    rasterize_batch(drawings)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc's mallopt (Linux)")


def _faults(mode: str, fixture_dir) -> int:
    # Dask's nanny puts MALLOC_TRIM_THRESHOLD_ into this process's environment when a test starts a cluster
    env = {k: v for k, v in os.environ.items() if k not in heap._ENV}
    proc = subprocess.run([sys.executable, "-c", LOOP, mode, str(fixture_dir / "full" / "simplified")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1])


@glibc
def test_rasterising_reuses_freed_memory_instead_of_faulting_in_pages(quickdraw_dir):
    plain, tuned = _faults("plain", quickdraw_dir), _faults("tuned", quickdraw_dir)
    # measured: ~36,000 faults plain, ~50 tuned, for 3 x 286 drawings
    assert tuned * 20 < plain, (plain, tuned)


@glibc
def test_the_users_own_malloc_settings_win(monkeypatch):
    monkeypatch.setattr(heap, "_applied", False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert heap.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    assert heap.keep_freed_memory() is True and heap.keep_freed_memory() is True  # once, then remembered
