"""The names of the files xtc writes in a run folder, and the one way it writes a file: atomically.

Stdlib only, so that xtc.study and the Snakemake workflow can use the names without importing torch."""
from __future__ import annotations

import glob
import json
import os
from contextlib import contextmanager

STATE_DIR = ".xtc_state"  # inside the run folder while a run is unfinished (resume state)
METRICS_FILE = "metrics.json"  # written last: its presence marks a finished run


def temp_path(path: str, pid: int | None = None) -> str:
    """The hidden temporary name beside `path` that `atomic_write` writes first ('.NAME.PID.tmp')."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.{os.getpid() if pid is None else pid}.tmp")


def remove_stale_temps(path: str) -> list[str]:
    """Delete the temporaries of `path` left by writers that were killed (their process is gone)."""
    d, base = os.path.split(os.path.abspath(path))
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(d), f".{glob.escape(base)}.*.tmp")):
        pid = tmp[len(os.path.join(d, f".{base}.")):-len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            os.unlink(tmp)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def atomic_write(path: str, mode: str = "w", overwrite: bool = True, **open_kwargs):
    """Yield a file object; on a clean exit its content replaces `path` in one rename, so a crash or kill never
    leaves a truncated file under the final name (only the hidden temporary, which is removed on errors).
    With overwrite=False an existing `path` is refused, also when it appeared while writing."""
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it or choose another name")
    remove_stale_temps(path)  # an earlier run of the same command that was killed mid-write
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if not overwrite and os.path.exists(path):
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it or choose another name")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str, obj) -> None:
    """`obj` as indented JSON (no NaN/inf: they are not JSON), written atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, allow_nan=False)
        f.write("\n")
