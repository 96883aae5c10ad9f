"""The names of the files xtc writes in a run folder, the one way it writes a file (atomically), the one cleaner of
temporaries that killed writers left, the checks of an output path, the one writer per output (an OS lock), and the
one-line error of a write that failed (full disk, no permission).

Stdlib only, so that xtc.study and the Snakemake workflow can use the names without importing torch."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager

STATE_DIR = ".xtc_state"  # inside the run folder while a run is unfinished (resume state)
METRICS_FILE = "metrics.json"  # written last: its presence marks a finished run
DEV_PREDICTIONS_FILE = "dev_predictions.json"  # beside it: the selected and final checkpoints' dev predictions


def temp_path(path: str, pid: int | None = None) -> str:
    """The hidden temporary name beside `path` that `atomic_write` writes first ('.NAME.PID.tmp')."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.{os.getpid() if pid is None else pid}.tmp")


# temporaries of killed writers: '.NAME.PID.tmp' (atomic_write) and the 'NAME.tmpPID' of earlier versions
_TEMP = re.compile(r"^(?:\.(?P<name>.+)\.(?P<pid>\d+)\.tmp|.+\.tmp(?P<old_pid>\d+))$")


def remove_stale_temps(folder: str, name: str | None = None) -> list[str]:
    """Delete the temporaries left in `folder` by writers that were killed (their process is gone): those of the
    file `name` ('.NAME.PID.tmp'), or every one. A running writer's are kept. Returns the removed paths."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for entry in entries:
        m = _TEMP.match(entry)
        if not m or (name is not None and m["name"] != name):
            continue
        path = os.path.join(folder, entry)
        if os.path.isfile(path) and not _alive(int(m["pid"] or m["old_pid"])):
            os.unlink(path)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (this one included); where that cannot be told, yes, so its files are kept."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # someone else's process; a PID out of range
        return True
    return True


def sha256(data: bytes) -> str:
    """The hex SHA-256 of `data` (the checksums of checkpoints and packed files)."""
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- output paths, checked before anything runs
def check_out_folder(out_dir: str, what: str = "--out") -> None:
    """A run folder path must be a folder (or not exist yet) in an existing, writable parent folder."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"{what} {out_dir} is an existing file, not a run folder; choose a folder path")
    check_writable_parent(out_dir if os.path.isdir(out_dir) else os.path.dirname(os.path.abspath(out_dir)),
                          out_dir, what)


def check_out_file(out_file: str, what: str = "--out") -> None:
    """An output file path must not be a folder, and its parent must be an existing, writable folder."""
    if os.path.isdir(out_file):
        raise IsADirectoryError(f"{what} {out_file} is a folder; name the file to write, e.g. {out_file}/out")
    check_writable_parent(os.path.dirname(os.path.abspath(out_file)), out_file, what)


def check_writable_parent(folder: str, target: str, what: str) -> None:
    if not os.path.isdir(folder):
        kind = "is a file" if os.path.exists(folder) else "does not exist"
        raise FileNotFoundError(f"{what} {target}: folder {folder} {kind}; create it first or choose another {what}")
    try:  # a real write: os.access says yes to root even on read-only mounts
        fd, probe = tempfile.mkstemp(prefix=".xtc-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PermissionError(f"{what} {target}: cannot write in {folder} ({exc.strerror}); "
                              f"choose a folder you can write to") from None


# ---------------------------------------------------------------- failed writes: one line naming the path
# errors of the machine, not of the program: a full disk or quota, no permission, a read-only filesystem
WRITE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                errno.EROFS: "read-only file system", errno.EFBIG: "file too large"}


class WriteError(OSError):
    """A write that failed for want of space or permission; its message is the one line the user sees."""

    def __init__(self, message: str, err: int | None = None):
        super().__init__(message)
        self.errno = err

    def __str__(self) -> str:
        return self.args[0]


def _size(n: int) -> str:
    if n < 2**20:
        return f"{n / 2**10:.0f} KB"
    return f"{n / 2**20:.1f} MB" if n < 10 * 2**20 else f"{n / 2**20:.0f} MB"


def free_bytes(path: str) -> int | None:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent folder)."""
    d = os.path.abspath(path)
    while not os.path.isdir(d) and os.path.dirname(d) != d:
        d = os.path.dirname(d)
    try:
        return shutil.disk_usage(d).free
    except OSError:
        return None


def is_write_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and not isinstance(exc, WriteError) and exc.errno in WRITE_ERRNOS


def write_errno(exc: BaseException) -> int | None:
    """The errno of a failed write (full disk, no permission), also where a library wraps it in its own error
    (safetensors: 'IoError(Os { code: 28, kind: StorageFull, ... })'); None for any other error."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in WRITE_ERRNOS else None
    import re

    m = re.search(r"\bcode: (\d+)|\bos error (\d+)", str(exc))
    err = int(m.group(1) or m.group(2)) if m else None
    return err if err in WRITE_ERRNOS else None


def write_error(exc: OSError, path: str, what: str, needed: int | None = None, over: int | None = None) -> WriteError:
    """The one-line error for `exc`, raised while writing `what` to `path`: where, why, how much (`needed` bytes,
    or more than the `over` bytes written before the disk filled), what to do."""
    why = WRITE_ERRNOS.get(exc.errno) or (exc.strerror or type(exc).__name__).lower()
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        free = free_bytes(path)
        need = f"needs about {_size(needed)}" if needed else f"needs more than {_size(over)}" if over else ""
        sizes = [need, f"{_size(free)} free" if free is not None else ""]
        sizes = ", ".join(s for s in sizes if s)
        fix = "free space and run the same command again"
        why = f"{why} ({sizes})" if sizes else why
    else:
        fix = "make it writable or choose another output, then run the same command again"
    return WriteError(f"cannot write {what} to {path}: {why}; {fix}", exc.errno)


@contextmanager
def atomic_write(path: str, mode: str = "w", overwrite: bool = True, what: str = "the file",
                 size: int | None = None, **open_kwargs):
    """Yield a file object; on a clean exit its content replaces `path` in one rename, so a crash or kill never
    leaves a truncated file under the final name (only the hidden temporary, which is removed on errors).
    With overwrite=False an existing `path` is refused, also when it appeared while writing. A full disk or a
    missing permission is a WriteError naming `what`, `path` and (for a full disk) `size`, the bytes needed."""
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it or choose another name")
    remove_stale_temps(*os.path.split(os.path.abspath(path)))  # an earlier, killed run of the same command
    tmp, written = temp_path(path), None
    try:
        with open(tmp, mode, **open_kwargs) as f:
            try:
                yield f
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:  # the bytes written so far, when no size was given
                if is_write_error(exc) and size is None:
                    raw = getattr(f, "buffer", f)  # the bytes that reached the disk: below what was needed
                    try:
                        written = getattr(raw, "raw", raw).tell()
                    except (OSError, ValueError, AttributeError):
                        pass
                raise
        if not overwrite and os.path.exists(path):
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it or choose another name")
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_write_error(exc):
            raise write_error(exc, path, what, size, over=written) from None
        raise


def write_json_atomic(path: str, obj, what: str = "the file") -> None:
    """`obj` as indented JSON (no NaN/inf: they are not JSON), written atomically."""
    with atomic_write(path, what=what) as f:
        json.dump(obj, f, indent=2, allow_nan=False)
        f.write("\n")


def make_dirs(path: str, what: str = "the output folder") -> None:
    """os.makedirs(exist_ok=True), with a full disk or a missing permission as a WriteError naming `path`."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        if is_write_error(exc):
            raise write_error(exc, path, what) from None
        raise


def write_csv_atomic(path: str, frame, what: str = "the table") -> None:
    """A pandas DataFrame as CSV without its index, written atomically (a kill never leaves half a table)."""
    with atomic_write(path, newline="", encoding="utf-8", what=what) as f:
        frame.to_csv(f, index=False)


def write_text_atomic(path: str, text: str, what: str = "the file") -> None:
    with atomic_write(path, encoding="utf-8", what=what) as f:
        f.write(text)


# ---------------------------------------------------------------- one writer per output
LOCK_SUFFIX = ".xtc-lock"
_HELD: dict[str, int] = {}  # lock files this process holds -> nesting depth (flock would refuse a second open)


class OutputLockedError(RuntimeError):
    """Another process is writing the same output."""


def lock_path(target: str) -> str:
    """The lock file of the output `target` (a run folder or a file): hidden beside it, '.NAME.xtc-lock', so that
    it exists only while a writer runs and survives (unlocked) a --overwrite that replaces the folder."""
    d, base = os.path.split(os.path.abspath(target))
    return os.path.join(d, f".{base}{LOCK_SUFFIX}")


def _holder(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            pid = f.read(32).strip()
    except OSError:
        pid = ""
    return f"PID {pid}" if pid.isdigit() else "a process that has not written its PID yet"


@contextmanager
def exclusive_writer(target: str, what: str = "output"):
    """Hold the OS lock (flock) of `target` while the block writes it; a second writer gets OutputLockedError at
    once, naming the folder and the PID that holds it. The kernel drops the lock when the process dies (even on
    kill -9), so a crash never blocks the retry; the lock file is removed on a normal exit. Re-entrant within a
    process."""
    path = lock_path(target)
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if is_write_error(exc):
                raise write_error(exc, path, f"the lock file of {what} {target}") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(f"{what} {target} is being written by another process ({_holder(path)}, lock "
                                    f"{path}); wait for it to finish or stop it, then run the same command "
                                    f"again") from None
        try:  # the holder may have removed the file between our open and flock: then lock the new one
            st, now = os.fstat(fd), os.stat(path)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:  # the PID, for the message of a second writer; a full disk must not stop the lock itself
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass
    _HELD[path] = 1
    try:
        yield
    finally:
        del _HELD[path]
        try:
            os.unlink(path)  # while still locked: a waiting opener notices the change of file (the loop above)
        except OSError:
            pass
        os.close(fd)


# ---------------------------------------------------------------- Snakemake's own lock after a kill -9
def live_snakemake_pids(workdir: str) -> list[int]:
    """Other running `snakemake` processes whose working directory is `workdir` (Linux /proc; this process and
    its parents excluded). A process whose folder cannot be read counts as live, to be safe."""
    ours, pid = set(), os.getpid()
    while pid > 1 and pid not in ours:  # this process and its ancestors (make -> snakemake)
        ours.add(pid)
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    live, target = [], os.path.realpath(workdir)
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not name.isdigit() or int(name) in ours:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not any(os.path.basename(a).startswith(b"snakemake") or a.endswith(b"snakemake/__main__.py")
                   for a in argv[:3]):
            continue
        try:
            if os.path.realpath(os.readlink(f"/proc/{name}/cwd")) != target:
                continue
        except OSError:
            pass  # another user's process: cannot tell where it runs
        live.append(int(name))
    return live


def remove_stale_snakemake_lock(workdir: str = ".") -> bool:
    """Snakemake's lock (.snakemake/locks/) is a set of plain files, not an OS lock: a `snakemake` killed with -9
    (or a power loss) leaves it behind and the next run refuses to start until `snakemake --unlock`. Remove it when
    no other snakemake process runs in `workdir`, so the same command run again just continues. Returns whether a
    stale lock was removed. Linux only (elsewhere nothing is removed)."""
    lockdir = os.path.join(workdir, ".snakemake", "locks")
    if not os.path.isdir("/proc") or not os.path.isdir(lockdir) or not os.listdir(lockdir):
        return False
    if live_snakemake_pids(workdir):
        return False  # a running instance's lock: Snakemake refuses the second instance itself
    for name in os.listdir(lockdir):
        try:
            os.unlink(os.path.join(lockdir, name))
        except OSError:
            return False
    return True
