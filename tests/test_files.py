"""xtc.files.atomic_write: the one way xtc writes a file."""
import os
import subprocess
import sys

import pytest

from xtc.files import atomic_write, temp_path, write_json_atomic


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
