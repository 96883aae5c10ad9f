"""Helpers of the tests in tests/study/: a tiny valid study config, and a synthetic run tree for it (metrics, sizes,
benchmark files)."""
import json
import os

from xtc import study


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
PROFILES = os.path.join(ROOT, "workflow", "config")


def tiny_config(tmp_path=None, seeds=(1, 2)) -> dict:
    """A 4-layer teacher, two tasks (one small, one large), every axis with few points."""
    cfg = {
        "profile": "test",
        "teacher": {"model": "default", "num_layers": 4, "epochs": 1.0, "lr": 5e-5},
        "tasks": ["sst2", "rte"],
        "seeds": list(seeds),
        "data": {"max_train_samples": 32, "max_eval_samples": 32, "max_seq_length": 32},
        "train": {},
        "budgets": {"short": 1.0, "long": 3.0, "reduce": 3.0},
        "budget_overrides": [{"tasks": ["rte"], "budget": "reduce", "epochs": 4.0}],
        "anchor": {"depth": "full", "wbits": 1, "abits": 8, "kd": "one-stage", "epochs": "long", "lr": 5e-5,
                   "da": False},  # YAML's `off`
        "step1": {"epochs": "reduce", "lr": 5e-5, "kd": "one-stage"},
        "axes": [
            {"name": "budget", "vary": {"wbits": [2, 1], "epochs": ["short", "long"]}},
            {"name": "lr", "vary": {"lr": [5e-5, 1e-4]}},
            {"name": "kd", "vary": {"kd": ["none", "two-stage", "one-stage"]}},
            {"name": "da", "vary": {"da": ["off", "on"]}},
            {"name": "bits", "vary": {"wbits": [2, 1]}},
            {"name": "depth", "vary": {"depth": ["full", 2]}, "set": {"wbits": 32}},
            {"name": "xtc", "vary": {"depth": ["full", 2], "wbits": [32, 1]}},
        ],
        "paths": {"runs": str(tmp_path / "runs") if tmp_path else "runs/test",
                  "results": str(tmp_path / "results") if tmp_path else "results/test",
                  "figures": str(tmp_path / "figures") if tmp_path else "figures/test"},
        "claims": {"size_max_drop": 1.5},
    }
    return study.validate_config(cfg)


ANCHOR = "task~sst2/depth~4/wbits~1/abits~8/kd~one-stage/epochs~3/lr~5e-05/da~off/init~teacher/seed~1"


def _metrics(task: str, score: float) -> dict:
    return {"accuracy": score}  # sst2 and rte: accuracy only


def write_tree(cfg: dict, score_of, skip=(), packed_ratio: float = 20.0, benchmark: bool = True) -> str:
    """Fake finished runs: metrics.json (as xtc writes it), size.json for quantized students, benchmarks."""
    root = cfg["paths"]["runs"]
    teacher_bytes = 4_000_000
    for r in study.study_runs(cfg).to_dict("records"):
        if r["run_id"] in skip:
            continue
        d = os.path.join(root, r["run_id"])
        os.makedirs(d, exist_ok=True)
        rec = {"task": r["task"], "selection_metric": "accuracy", "metrics": _metrics(r["task"], score_of(r)),
               "wall_seconds": 1.5, "train_tokens_per_second": 100.0}
        if r["kind"] == "student":
            fp32 = teacher_bytes * r["depth"] // cfg["teacher"]["num_layers"]
            rec["size"] = {"fp32_bytes": fp32, "quantized_bytes": fp32 if r["wbits"] == 32 else fp32 // 30,
                           "teacher_fp32_bytes": teacher_bytes, "ratio_to_teacher": 1.0}
            rec["layers"] = {"student": r["depth"], "teacher": 4, "teacher_layers": [1, 3] if r["depth"] == 2 else None}
            if r["wbits"] < 32:
                key = study.run_key(r)
                os.makedirs(os.path.dirname(study.size_file(root, key)), exist_ok=True)
                w = teacher_bytes / packed_ratio * (r["depth"] / 4)
                with open(study.size_file(root, key), "w") as f:
                    json.dump({"weights_bytes": w, "file_bytes": w + 1000}, f)
        with open(os.path.join(d, "metrics.json"), "w") as f:
            json.dump(rec, f)
        if benchmark:
            b = study.benchmark_file(root, r["run_id"])
            os.makedirs(os.path.dirname(b), exist_ok=True)
            with open(b, "w") as f:
                f.write("s\th:m:s\tmax_rss\tmax_vms\n12.5\t0:00:12\t850.0\t2000\n")
    return root


def base_score(r) -> float:
    """A plausible study: teacher 0.90 (sst2) / 0.70 (rte); quantization, short budgets, shallow depth cost."""
    s = {"sst2": 0.90, "rte": 0.70}[r["task"]]
    if r["kind"] == "teacher":
        return s
    s -= {1: 0.010, 2: 0.005, 32: 0.002}[r["wbits"]]
    s -= 0.04 if r["epochs"] < 2 else 0.0
    s -= {"none": 0.03, "two-stage": 0.01, "one-stage": 0.0}[r["kd"]]
    s += {"sst2": 0.002, "rte": 0.02}[r["task"]] if r["da"] == "on" else 0.0
    s -= 0.003 * (4 - r["depth"])
    s += 0.002 * (r["seed"] - 1.5)  # seed noise: +-0.001
    return s
