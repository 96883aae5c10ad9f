"""xtc.files: atomic writes, one writer per output (an OS lock), the one-line error of a failed write."""
import errno
import json
import os
import subprocess
import sys

import pytest

from xtc.files import (OutputLockedError, WriteError, atomic_write, exclusive_writer, live_snakemake_pids, lock_path,
                       remove_stale_snakemake_lock, temp_path, write_errno, write_error, write_json_atomic)


def test_success_replaces_and_failure_keeps_the_old_file_and_no_temp(tmp_path):
    path = str(tmp_path / "metrics.json")
    write_json_atomic(path, {"a": 1})
    with pytest.raises(ValueError):  # NaN is not JSON: refused mid-write
        write_json_atomic(path, {"a": float("nan")})
    assert open(path).read() == '{\n  "a": 1\n}\n'
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_overwrite_false_refuses_an_existing_file(tmp_path):
    path = str(tmp_path / "x.xtc")
    with atomic_write(path, "wb") as f:
        f.write(b"1")
    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic_write(path, "wb", overwrite=False) as f:
            f.write(b"2")
    assert open(path, "rb").read() == b"1" and os.listdir(tmp_path) == ["x.xtc"]


def test_temp_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    path = str(tmp_path / "out.jsonl")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = temp_path(path, int(dead.stdout))  # that process has exited
    live = temp_path(path, os.getppid())  # a running writer's temporary is left alone
    for t in (stale, live):
        open(t, "w").write("partial")
    with atomic_write(path) as f:
        f.write("done\n")
    assert not os.path.exists(stale) and os.path.exists(live) and open(path).read() == "done\n"


# ---------------------------------------------------------------- one writer per output (issue 28)
HOLD = """import sys, time
from xtc.files import exclusive_writer
with exclusive_writer(sys.argv[1], "run folder"):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(target: str) -> subprocess.Popen:
    """A second process that holds the lock of `target` until killed."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, target], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "held\n"
    return p


def test_second_writer_is_refused_at_once_naming_the_folder_and_the_pid(tmp_path):
    target = str(tmp_path / "run")
    p = _holder(target)
    try:
        assert open(lock_path(target)).read().strip() == str(p.pid)
        with pytest.raises(OutputLockedError) as err:
            with exclusive_writer(target, "run folder"):
                pytest.fail("two writers held one folder")
        msg = str(err.value)
        assert f"run folder {target} is being written by another process (PID {p.pid}" in msg and "\n" not in msg
    finally:
        p.kill()
        p.wait()
    with exclusive_writer(target):  # kill -9 released it: the retry is never blocked by a dead writer
        assert os.path.exists(lock_path(target))
    assert not os.path.exists(lock_path(target))  # a normal exit removes the lock file
    assert os.listdir(tmp_path) == []


def test_lock_is_reentrant_in_one_process_and_separate_per_output(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b.xtc")
    with exclusive_writer(a), exclusive_writer(b):
        with exclusive_writer(a):  # a command that locks a folder and calls a writer that locks it again
            pass
        assert os.path.exists(lock_path(a))
    assert os.listdir(tmp_path) == []


def test_a_stale_lock_file_of_a_killed_writer_does_not_block(tmp_path):
    target = str(tmp_path / "run")
    open(lock_path(target), "w").write("999999999\n")  # left by kill -9: the file stays, the OS lock does not
    with exclusive_writer(target):
        assert open(lock_path(target)).read().strip() == str(os.getpid())


# ---------------------------------------------------------------- failed writes: one line naming the path
def test_write_error_names_what_where_why_and_the_fix(tmp_path):
    err = write_error(OSError(errno.ENOSPC, "No space left on device"), str(tmp_path / "x.xtc"), "the packed model",
                      needed=3 * 2**20)
    msg = str(err)
    assert msg.startswith(f"cannot write the packed model to {tmp_path / 'x.xtc'}: no space left on device "
                          "(needs about 3.0 MB, ")
    assert " free); free space and run the same command again" in msg and err.errno == errno.ENOSPC
    msg = str(write_error(OSError(errno.EROFS, "Read-only file system"), "out/run", "the checkpoint"))
    assert msg == ("cannot write the checkpoint to out/run: read-only file system; make it writable or choose "
                   "another output, then run the same command again")
    # safetensors wraps the OS error in its own exception; the errno is still found
    assert write_errno(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")) == 28
    assert write_errno(ValueError("code: 2")) is None and write_errno(FileNotFoundError(2, "x")) is None


@pytest.fixture
def full_disk(tmpfs):
    """A 1 MiB tmpfs filled to the last byte; (folder, free_space)."""
    fs, fill, free_space = tmpfs("1m")
    fill()
    return fs, free_space


def test_full_disk_keeps_the_old_file_and_leaves_no_temp(full_disk):
    fs, free_space = full_disk
    path = os.path.join(fs, "summary.csv")
    with pytest.raises(WriteError, match=f"cannot write the table to {path}: no space left on device "
                                         r"\((needs more than .* KB, )?0 KB free\); free space and run the same"):
        with atomic_write(path, what="the table") as f:
            f.write("x" * 2**20)
    assert sorted(os.listdir(fs)) == ["filler"]
    free_space()
    write_json_atomic(path, {"a": 1})  # the retry completes
    assert json.load(open(path)) == {"a": 1}


def test_stale_snakemake_lock_is_removed_only_when_no_snakemake_runs_there(tmp_path):
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("x")
    # a running `snakemake` in that folder (argv[0] named so): its lock is not stale
    p = subprocess.Popen(["bash", "-c", "exec -a snakemake sleep 60"], cwd=tmp_path)
    try:
        assert wait_until(lambda: p.pid in live_snakemake_pids(str(tmp_path)))
        assert not remove_stale_snakemake_lock(str(tmp_path)) and (locks / "0.input.lock").exists()
    finally:
        p.kill()
        p.wait()
    assert remove_stale_snakemake_lock(str(tmp_path)) and os.listdir(locks) == []
    assert not remove_stale_snakemake_lock(str(tmp_path))  # nothing left to remove


def wait_until(cond, seconds: float = 10) -> bool:
    import time

    end = time.time() + seconds
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False
