"""The resume state of an unfinished run, without pickle: tensors in safetensors, everything else in JSON.

A run folder a user points at may come from anywhere, so nothing in it may run code when read. The state
(counters, history, run config, model, best model, optimizer, scheduler, Python/NumPy/torch RNG) is split
by `encode` into a JSON tree and a flat {key: tensor} dict; `decode` builds it back. The JSON tree holds
only JSON values plus four tagged objects that decode to data, never to code:

  {"__tensor__": key}                          a tensor stored in the safetensors file under `key`
  {"__tuple__": [...]}                         a tuple (Python's RNG state, AdamW's betas)
  {"__dict__": [[key, value], ...]}            a dict with non-string keys (optimizer state by param index)
  {"__ndarray__": [dtype, shape, [values]]}    a small NumPy array (NumPy's RNG key), integer or float dtype

On disk, in OUT/.xtc_state/:
  state.json                        {"format": "xtc-state", "version": 1, "tensors": FILE, "sha256": HEX,
                                     "state": TREE}
  tensors-<step>.safetensors        the tensors of that checkpoint

The tensors file is written first under a new name, then state.json is replaced atomically, then older
tensors files are removed: a kill at any point leaves a state.json whose tensors file exists and matches.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from xtc.files import atomic_write, is_write_error, sha256, write_error

FORMAT = "xtc-state"
VERSION = 1
STATE_JSON = "state.json"
LEGACY_PICKLE = "state.pt"  # written by xtc before the safetensors state; never read
_NDARRAY_KINDS = "iuf"  # integer, unsigned, float: nothing that could hold objects


class StateFileError(ValueError):
    """A resume state that is unreadable, corrupted or not written by xtc; the message says how to recover."""


def encode(obj, tensors: dict[str, torch.Tensor], path: str = "s"):
    """JSON tree of `obj`, moving every tensor into `tensors` under a key derived from where it sits."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _NDARRAY_KINDS:
            raise TypeError(f"{path}: cannot store a NumPy array of dtype {obj.dtype}")
        return {"__ndarray__": [obj.dtype.str, list(obj.shape), obj.reshape(-1).tolist()]}
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        if not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in obj):
            raise TypeError(f"{path}: dict keys must be str or int")
        return {"__dict__": [[k, encode(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    raise TypeError(f"{path}: cannot store a {type(obj).__name__} in the resume state")


def decode(tree, tensors: dict[str, torch.Tensor]):
    """Inverse of `encode`: builds only dicts, lists, tuples, numbers, strings, tensors and numeric arrays."""
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) == 1:
        (tag, value), = tree.items()
        if tag == "__tensor__":
            if not isinstance(value, str) or value not in tensors:
                raise StateFileError(f"refers to tensor {value!r}, which its tensors file does not hold")
            return tensors[value]
        if tag == "__tuple__" and isinstance(value, list):
            return tuple(decode(v, tensors) for v in value)
        if tag == "__dict__" and isinstance(value, list):
            if not all(isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], (str, int)) for kv in value):
                raise StateFileError("holds a malformed __dict__ entry")
            return {k: decode(v, tensors) for k, v in value}
        if tag == "__ndarray__":
            try:
                dtype, shape, values = value
                dtype = np.dtype(str(dtype))
                if dtype.kind not in _NDARRAY_KINDS:
                    raise ValueError(f"dtype {dtype} is not numeric")
                return np.asarray(values, dtype=dtype).reshape([int(s) for s in shape])
            except (TypeError, ValueError) as exc:
                raise StateFileError(f"holds a malformed __ndarray__ entry ({exc})") from None
    if any(k.startswith("__") for k in tree):
        raise StateFileError(f"holds an unknown tagged object {sorted(tree)[:3]}")
    return {k: decode(v, tensors) for k, v in tree.items()}


def has_state(state_dir: str) -> bool:
    """Whether `state_dir` holds a resume state (readable or not), current or legacy."""
    return any(os.path.isfile(os.path.join(state_dir, f)) for f in (STATE_JSON, LEGACY_PICKLE))


def save_state(state_dir: str, state: dict, step: int) -> None:
    """Write `state` (nested dicts/lists/tuples of JSON values, tensors and numeric arrays) atomically. A failed
    write (full disk, no permission) is a WriteError naming the folder and leaves the previous state as it was."""
    try:
        os.makedirs(state_dir, exist_ok=True)
    except OSError as exc:
        if is_write_error(exc):
            raise write_error(exc, state_dir, "the checkpoint") from None
        raise
    tensors: dict[str, torch.Tensor] = {}
    tree = encode(state, tensors)
    blob = st_save(tensors, metadata={"format": FORMAT})
    name = f"tensors-{int(step)}.safetensors"
    tensors_path = os.path.join(state_dir, name)
    new_file = not os.path.exists(tensors_path)
    doc = {"format": FORMAT, "version": VERSION, "tensors": name, "sha256": sha256(blob), "state": tree}
    try:
        with atomic_write(tensors_path, "wb", what="the checkpoint", size=len(blob)) as f:  # tensors first,
            f.write(blob)  # then the JSON that names them
        with atomic_write(os.path.join(state_dir, STATE_JSON), what="the checkpoint", size=len(blob)) as f:
            json.dump(doc, f)  # -inf (no best score yet) is written as -Infinity, which json reads back
    except BaseException:
        if new_file and os.path.exists(tensors_path):  # state.json still names the previous tensors file
            os.unlink(tensors_path)
        raise
    for other in os.listdir(state_dir):  # older checkpoints and temp files of killed writes
        if other != name and other != STATE_JSON:
            os.unlink(os.path.join(state_dir, other))


def load_state(state_dir: str) -> dict:
    """Read what `save_state` wrote. Never unpickles; any problem is a StateFileError naming the folder."""
    def bad(why: str) -> StateFileError:
        return StateFileError(f"cannot resume from {state_dir}: {why}; pass --overwrite to start the run over")

    json_path = os.path.join(state_dir, STATE_JSON)
    if not os.path.isfile(json_path):
        if os.path.isfile(os.path.join(state_dir, LEGACY_PICKLE)):
            raise bad(f"it holds a pickled {LEGACY_PICKLE} (older xtc), which is never loaded because "
                      f"unpickling can run code")
        raise bad(f"no {STATE_JSON}")
    try:
        with open(json_path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"{STATE_JSON} is not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise bad(f"{STATE_JSON} is not an {FORMAT!r} version {VERSION} file")
    name = doc.get("tensors")
    if not isinstance(name, str) or os.path.basename(name) != name or not name.endswith(".safetensors"):
        raise bad(f"{STATE_JSON} names no tensors file in its folder")
    try:
        with open(os.path.join(state_dir, name), "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise bad(f"cannot read {name} ({exc.strerror})") from None
    if sha256(blob) != doc.get("sha256"):
        raise bad(f"{name} fails its sha256 check (corrupted or replaced)")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError) as exc:
        raise bad(f"{name} is not a valid safetensors file ({exc})") from None
    try:
        state = decode(doc.get("state"), tensors)
    except StateFileError as exc:
        raise bad(f"{STATE_JSON} {exc}") from None
    except RecursionError:
        raise bad(f"{STATE_JSON} is nested too deeply") from None
    if not isinstance(state, dict):
        raise bad(f"{STATE_JSON} holds no state object")
    return state
