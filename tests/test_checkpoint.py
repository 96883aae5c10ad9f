"""Tests of xtc/checkpoint.py: the resume state's format; a state file is read, never unpickled."""
import json
import os
import pickle

import pytest
import torch

from test_run_folder import _unfinished_run
from xtc.checkpoint import STATE_JSON, StateFileError, load_state, save_state
from xtc.cli import main
from xtc.files import STATE_DIR


class _RunsCode:
    """Unpickling this creates the marker file: the proof that a state file ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_state_round_trips_every_kind_of_value(tmp_path):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3))], lr=0.1)
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    import random

    import numpy as np

    state = {"optimizer": opt.state_dict(), "py": random.getstate(), "np": np.random.get_state(),
             "best": -float("inf"), "none": None, "nested": [{"a": (1, 2.5, "x")}], "t": torch.arange(4)}
    save_state(str(tmp_path), state, step=7)
    back = load_state(str(tmp_path))
    assert back["py"] == state["py"] and back["best"] == -float("inf") and back["nested"] == state["nested"]
    assert back["np"][0] == "MT19937" and (back["np"][1] == state["np"][1]).all() and back["np"][2:] == state["np"][2:]
    assert back["optimizer"]["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])
    assert back["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]
    assert sorted(os.listdir(tmp_path)) == ["state.json", "tensors-7.safetensors"]
    save_state(str(tmp_path), state, step=9)  # the previous checkpoint's tensors go
    assert sorted(os.listdir(tmp_path)) == ["state.json", "tensors-9.safetensors"]


def _crafted(state_dir: str, how: str, marker: str) -> None:
    payload = pickle.dumps(_RunsCode(marker))
    for f in os.listdir(state_dir):
        os.unlink(os.path.join(state_dir, f))
    if how == "pickle named state.pt":
        open(os.path.join(state_dir, "state.pt"), "wb").write(payload)
    elif how == "pickle named state.json":
        open(os.path.join(state_dir, STATE_JSON), "wb").write(payload)
    elif how == "pickle as the tensors file":
        import hashlib

        open(os.path.join(state_dir, "tensors-1.safetensors"), "wb").write(payload)
        json.dump({"format": "xtc-state", "version": 1, "tensors": "tensors-1.safetensors",
                   "sha256": hashlib.sha256(payload).hexdigest(), "state": {}},
                  open(os.path.join(state_dir, STATE_JSON), "w"))
    elif how == "json with object tags":
        json.dump({"format": "xtc-state", "version": 1, "tensors": "../../" + os.path.basename(marker),
                   "sha256": "0", "state": {"__reduce__": ["os.system", f"touch {marker}"],
                                            "py/object": "os.system", "!!python/object": marker}},
                  open(os.path.join(state_dir, STATE_JSON), "w"))
    elif how == "json with unknown tag":
        save_state(state_dir, {"x": 1}, step=1)
        doc = json.load(open(os.path.join(state_dir, STATE_JSON)))
        doc["state"] = {"__reduce__": ["builtins.open", [marker, "w"]]}
        json.dump(doc, open(os.path.join(state_dir, STATE_JSON), "w"))
    elif how == "deeply nested json":
        save_state(state_dir, {"x": 1}, step=1)
        doc = json.load(open(os.path.join(state_dir, STATE_JSON)))
        text = json.dumps(doc).replace('"state": {"x": 1}', '"state": ' + "[" * 100_000 + "]" * 100_000)
        open(os.path.join(state_dir, STATE_JSON), "w").write(text)


@pytest.mark.parametrize("how", ["pickle named state.pt", "pickle named state.json", "pickle as the tensors file",
                                 "json with object tags", "json with unknown tag", "deeply nested json"])
def test_crafted_state_file_runs_no_code(tmp_path, tiny_model_dir, glue_dir, monkeypatch, capsys, how):
    marker = str(tmp_path / "MARKER")
    with open(os.devnull, "wb"):  # the payload does run code when unpickled: the test's premise holds
        pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert os.path.exists(marker)
    os.unlink(marker)
    out = _unfinished_run(tmp_path, tiny_model_dir, glue_dir, monkeypatch)
    _crafted(os.path.join(out, STATE_DIR), how, marker)
    code = main(["finetune", "--task", "sst2", "--model", tiny_model_dir, "--out", out, "--glue-dir", glue_dir,
                 "--epochs", "3", "--lr", "1e-2", "--batch-size", "16", "--eval-every", "3", "--warmup-epochs", "0.5",
                 "--seed", "5", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot resume from" in err and "--overwrite" in err
    assert not os.path.exists(marker)
    with pytest.raises(StateFileError):
        load_state(os.path.join(out, STATE_DIR))
    assert not os.path.exists(marker)


def test_no_pickle_loader_on_user_paths():
    """Nothing in the package may unpickle: torch.load, pickle, or NumPy with allow_pickle."""
    root = os.path.join(os.path.dirname(__file__), "..", "xtc")
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name)).read()
                for bad in ("torch.load(", "import pickle", "pickle.load", "allow_pickle=True", "weights_only=False"):
                    assert bad not in text, f"{name} uses {bad}"
