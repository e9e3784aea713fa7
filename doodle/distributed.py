"""Rasterising on a Dask cluster (`pip install "doodle[dask]"`): one task per category, each worker
streaming its category into the cache files on a path every worker shares (doodle.cache.build_category).

Dask does the hard parts: it spreads the tasks, and when a worker dies mid-task it runs the task again
elsewhere. A task writes to a temporary and renames it into place only when complete, so a killed
worker leaves at worst a temporary (swept by doodle.cache.build_all), never a corrupt cache file.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable

from doodle.errors import DoodleError

CONNECT_SECONDS = 30


def _client(address: str):
    try:
        from dask.distributed import Client
    except ImportError:
        raise DoodleError(f"data.scheduler is {address!r} but Dask is not installed; "
                          "pip install \"doodle[dask]\" (or set data.scheduler: null to rasterise here)") from None
    try:
        return Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise DoodleError(f"data.scheduler: cannot reach the Dask scheduler at {address} ({err}); "
                          "check the address (e.g. tcp://host:8786) and that `dask scheduler` runs there") from None


def run_on_cluster(task: Callable, jobs: list[tuple], address: str, on_done: Callable[[dict], None]) -> list[dict]:
    """task(*job) for every job on the cluster at `address`; results in job order, on_done(result) as each ends.

    The workers must see the jobs' paths (a shared file system) and have doodle installed.
    """
    from dask.distributed import as_completed

    with _client(address) as client:
        # pure=False: a task writes files, so Dask must never skip one as "already computed";
        # retries: a task that raised (e.g. a transient file-system error) runs again.
        run = uuid.uuid4().hex[:8]  # keys name the file (for the dashboard) and are unique to this build
        futures = [client.submit(task, *job, pure=False, retries=2, key=f"doodle-cache-{Path(job[1]).name}-{run}")
                   for job in jobs]
        index = {f.key: i for i, f in enumerate(futures)}
        results: dict[int, dict] = {}  # job index -> result; all of them once as_completed is through
        try:
            for future in as_completed(futures, loop=client.loop):
                result = future.result()  # re-raises a task's DoodleError here
                results[index[future.key]] = result
                on_done(result)
        except BaseException:
            client.cancel(futures)
            raise
    return [results[i] for i in range(len(jobs))]

