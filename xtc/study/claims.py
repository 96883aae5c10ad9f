"""The five findings of the XTC recipe checked against the results: a verdict each (one of VERDICTS) with
the test, the evidence and the numbers behind it. Each claim_* docstring states its test."""
from __future__ import annotations

import json

from xtc.study.config import resolve_epochs
from xtc.study.grid import axis_tasks
from xtc.study.views import (TASK_TITLES, axis_config as _axis, axis_view, isnan as _nan, point_averages, teacher_avg,
                             teacher_view)

VERDICTS = ("holds", "does not hold", "not enough data")

CLAIMS = {
    1: "Earlier extreme-quantization baselines were under-trained: longer training closes most of the gap.",
    2: "With long training, one-stage KD matches or beats multi-stage KD.",
    3: "Data augmentation helps, most on the small tasks (CoLA, MRPC, RTE, STS-B).",
    4: "Layer reduction by copying teacher layers, with KD fine-tuning and no pre-training distillation, gives "
       "a 5/6-layer model better than TinyBERT-6L.",
    5: "Layer reduction plus 1-bit weights cuts size ~50x with a small loss (1-bit: GLUE avg 83.44 vs 83.95).",
}


def _claim(n, test, verdict, evidence, numbers, note=""):
    assert verdict in VERDICTS
    return {"finding": n, "claim": CLAIMS[n], "test": test, "verdict": verdict, "evidence": evidence,
            "numbers": json.dumps(numbers, sort_keys=True, default=lambda x: None if x != x else x),
            "note": note}


def claim_budget(config, runs, missing=None) -> dict:
    """Finding 1. In the `budget` axis, for every quantized bit-width b: gap(B) = teacher Avg - Avg(b, B).
    Holds when, for every b, the shortest budget leaves a gap of at least `min_gap` points and the longest
    budget closes at least `closed_share` of it: gap(longest) <= (1 - closed_share) * gap(shortest).
    Not enough data when a needed Avg is missing or no bit-width shows a gap at the shortest budget."""
    c = config["claims"]
    test = (f"budget axis: per bit-width, gap = teacher Avg - student Avg; holds if gap(shortest) >= "
            f"{c['min_gap']:g} and gap(longest) <= {1 - c['closed_share']:g} x gap(shortest) for every bit-width")
    if not _axis(config, "budget") or "epochs" not in _axis(config, "budget")["vary"]:
        return _claim(1, test, "not enough data", "no 'budget' axis varying epochs in the config", {})
    view = axis_view(config, "budget", runs, missing)
    t_avg = teacher_avg(config, teacher_view(config, runs), axis_tasks(config, "budget"))
    if not len(view) or _nan(t_avg):
        return _claim(1, test, "not enough data", "teacher or budget runs missing", {"teacher_avg": t_avg})
    pts = point_averages(config, view)
    pts["ep"] = pts["v_epochs"].map(lambda v: resolve_epochs(config, config["tasks"][0], v))
    numbers, verdicts, ev = {"teacher_avg": t_avg}, [], []
    for b, grp in pts[pts["wbits"] < 32].groupby("wbits"):
        grp = grp.sort_values("ep")
        lo, hi = grp.iloc[0], grp.iloc[-1]
        if len(grp) < 2 or _nan(lo["avg"]) or _nan(hi["avg"]):
            verdicts.append("not enough data")
            ev.append(f"W{b}: missing")
            continue
        g_lo, g_hi = t_avg - lo["avg"], t_avg - hi["avg"]
        numbers[f"w{b}"] = {"short_budget": lo["v_epochs"], "long_budget": hi["v_epochs"], "gap_short": g_lo,
                            "gap_long": g_hi, "avg_short": lo["avg"], "avg_long": hi["avg"]}
        ev.append(f"W{b}: gap {g_lo:.2f} -> {g_hi:.2f} points ({lo['v_epochs']} -> {hi['v_epochs']})")
        if g_lo < c["min_gap"]:
            verdicts.append("no gap")
        else:
            verdicts.append("holds" if g_hi <= (1 - c["closed_share"]) * g_lo else "does not hold")
    if not verdicts:
        return _claim(1, test, "not enough data", "no quantized bit-width in the budget axis", numbers)
    if "does not hold" in verdicts:
        v = "does not hold"
    elif "not enough data" in verdicts or all(x == "no gap" for x in verdicts):
        v = "not enough data"
    else:
        v = "holds"
    note = "a bit-width without a gap at the shortest budget cannot show it closing" if "no gap" in verdicts else ""
    return _claim(1, test, v, "; ".join(ev) + f"; teacher Avg {t_avg:.2f}", numbers, note)


def claim_kd(config, runs, missing=None) -> dict:
    """Finding 2. In the `kd` axis (trained at the anchor's, long, budget): holds when
    Avg(one-stage) >= Avg(two-stage) - tolerance points."""
    tol = config["claims"]["tolerance"]
    test = f"kd axis (anchor budget): Avg(one-stage) - Avg(two-stage) >= -{tol:g} points"
    if not _axis(config, "kd"):
        return _claim(2, test, "not enough data", "no 'kd' axis in the config", {})
    view = axis_view(config, "kd", runs, missing)
    if not len(view):
        return _claim(2, test, "not enough data", "no kd runs", {})
    pts = point_averages(config, view).set_index("v_kd")
    got = {k: float(pts.loc[k, "avg"]) for k in pts.index}
    if _nan(got.get("one-stage")) or _nan(got.get("two-stage")):
        return _claim(2, test, "not enough data", "one-stage or two-stage Avg missing", got)
    d = got["one-stage"] - got["two-stage"]
    ev = ", ".join(f"{k} {v:.2f}" for k, v in got.items() if not _nan(v)) + f"; one-stage - two-stage = {d:+.2f}"
    return _claim(2, test, "holds" if d >= -tol else "does not hold", ev, {**got, "diff": d, "tolerance": tol})


def claim_da(config, runs, missing=None) -> dict:
    """Finding 3. In the `da` axis: delta(task) = score(DA on) - score(DA off). 'Helps': mean delta over the
    tasks > 0. 'Most on small tasks': mean delta over the small tasks (config claims.small_tasks) > mean over
    the others; checked only when both groups are present. Holds when both parts hold (or 'helps' holds and
    the second part cannot be checked, which the note says)."""
    small = set(config["claims"]["small_tasks"])
    test = ("da axis: delta = score(on) - score(off) per task; holds if mean delta > 0 and mean delta(small "
            f"tasks {','.join(sorted(small))}) > mean delta(other tasks)")
    if not _axis(config, "da"):
        return _claim(3, test, "not enough data", "no 'da' axis in the config", {})
    view = axis_view(config, "da", runs, missing)
    if not len(view):
        return _claim(3, test, "not enough data", "no da runs", {})
    deltas = {}
    for task, grp in view.groupby("task", sort=False):
        s = dict(zip(grp["v_da"], grp["score"]))
        if not _nan(s.get("on")) and not _nan(s.get("off")):
            deltas[task] = s["on"] - s["off"]
    tasks = axis_tasks(config, "da")
    if len(deltas) < len(tasks):
        return _claim(3, test, "not enough data",
                      f"DA on/off pairs finished for {len(deltas)} of {len(tasks)} tasks", deltas)
    mean = sum(deltas.values()) / len(deltas)
    sm = [v for t, v in deltas.items() if t in small]
    lg = [v for t, v in deltas.items() if t not in small]
    ev = ", ".join(f"{TASK_TITLES[t]} {v:+.2f}" for t, v in deltas.items()) + f"; mean {mean:+.2f}"
    numbers = {"delta": deltas, "mean_delta": mean}
    if mean <= 0:
        return _claim(3, test, "does not hold", ev, numbers, "augmentation does not help on average")
    if sm and lg:
        ms, ml = sum(sm) / len(sm), sum(lg) / len(lg)
        numbers.update(small_mean=ms, large_mean=ml)
        ev += f"; small tasks {ms:+.2f} vs others {ml:+.2f}"
        return _claim(3, test, "holds" if ms > ml else "does not hold", ev, numbers,
                      "" if ms > ml else "helps on average, but not most on the small tasks")
    return _claim(3, test, "holds", ev, numbers, "only the 'helps' part is checkable: the config's tasks are all "
                  + ("small" if sm else "large"))


def claim_depth(config, runs, missing=None) -> dict:
    """Finding 4, adapted: TinyBERT-6L is not run here, so the test is whether a layer-reduced fp32 KD student
    (no pre-training distillation) of about half the teacher's depth stays close to the teacher. Target depths:
    the `depth` axis depths within [5L/12, L/2] for an L-layer teacher (5 and 6 of 12, 3 of 6; if none, the
    reduced depth closest to L/2). Holds when every target depth's Avg is within `depth_max_drop` points of
    the teacher's."""
    c = config["claims"]
    L = config["teacher"]["num_layers"]
    tol = c["depth_max_drop"]
    test = (f"depth axis, fp32 KD students of depth in [5L/12, L/2] (L={L}): teacher Avg - student Avg <= "
            f"{tol:g} points")
    note = "adapted: the paper compares with TinyBERT-6L, which this suite does not train"
    if not _axis(config, "depth"):
        return _claim(4, test, "not enough data", "no 'depth' axis in the config", {}, note)
    view = axis_view(config, "depth", runs, missing)
    t_avg = teacher_avg(config, teacher_view(config, runs), axis_tasks(config, "depth"))
    pts = point_averages(config, view) if len(view) else None
    if pts is None or _nan(t_avg):
        return _claim(4, test, "not enough data", "teacher or depth runs missing", {}, note)
    pts = pts[(pts["wbits"] == 32) & (pts["depth"] < L)]
    depths = sorted(set(pts["depth"]))
    target = [d for d in depths if 5 * L / 12 <= d <= L / 2]
    if not target and depths:
        target = [min(depths, key=lambda d: (abs(d - L / 2), -d))]
    if not target:
        return _claim(4, test, "not enough data", "no reduced depth in the depth axis", {}, note)
    numbers, ev, ok = {"teacher_avg": t_avg}, [], True
    for d in target:
        a = float(pts[pts["depth"] == d]["avg"].iloc[0])
        if _nan(a):
            return _claim(4, test, "not enough data", f"{d}-layer student missing", numbers, note)
        numbers[f"{d}L"] = {"avg": a, "drop": t_avg - a}
        ev.append(f"{d}L {a:.2f} (drop {t_avg - a:+.2f})")
        ok &= t_avg - a <= tol
    return _claim(4, test, "holds" if ok else "does not hold",
                  f"teacher {t_avg:.2f}; " + ", ".join(ev), numbers, note)


def claim_size(config, runs, missing=None) -> dict:
    """Finding 5. In the `xtc` axis, 1-bit students: ratio = teacher fp32 bytes / student bytes (packed .xtc
    weights where exported, else the theoretical quantized size) and drop = teacher Avg - Avg. Holds when some
    1-bit configuration reaches ratio >= size_min_ratio with drop <= size_max_drop points."""
    c = config["claims"]
    test = (f"xtc axis, 1-bit students: holds if some depth has size ratio >= {c['size_min_ratio']:g}x "
            f"(teacher fp32 / packed) and Avg drop <= {c['size_max_drop']:g} points")
    if not _axis(config, "xtc"):
        return _claim(5, test, "not enough data", "no 'xtc' axis in the config", {})
    view = axis_view(config, "xtc", runs, missing)
    teacher = teacher_view(config, runs)
    t_avg = teacher_avg(config, teacher, axis_tasks(config, "xtc"))
    if not len(view) or _nan(t_avg):
        return _claim(5, test, "not enough data", "teacher or xtc runs missing", {})
    pts = point_averages(config, view)
    t_bytes = [teacher[t]["bytes"] for t in axis_tasks(config, "xtc") if not _nan(teacher[t]["bytes"])]
    one = pts[(pts["wbits"] == 1)].sort_values("depth", ascending=False)
    numbers, ev, ok, any_data = {"teacher_avg": t_avg}, [], False, False
    for r in one.to_dict("records"):
        if _nan(r["avg"]) or _nan(r["model_bytes"]) or not t_bytes:
            continue
        any_data = True
        ratio = (sum(t_bytes) / len(t_bytes)) / r["model_bytes"]
        drop = t_avg - r["avg"]
        numbers[f"{int(r['depth'])}L"] = {"ratio": ratio, "drop": drop, "avg": r["avg"], "size": r["size_source"]}
        ev.append(f"{int(r['depth'])}L W1: {ratio:.1f}x ({r['size_source']}), drop {drop:+.2f}")
        ok |= ratio >= c["size_min_ratio"] and drop <= c["size_max_drop"]
    if not any_data:
        return _claim(5, test, "not enough data", "no finished 1-bit student with a size", numbers)
    note = ("ratios count fp32 position/token-type embeddings, LayerNorms, biases, pooler and classifier; "
            "the ceiling depends on the teacher's architecture")
    return _claim(5, test, "holds" if ok else "does not hold", f"teacher {t_avg:.2f}; " + "; ".join(ev), numbers,
                  note)


def check_claims(config: dict, runs, missing=None):
    """The five findings of the recipe with a verdict each (see each claim_* docstring for its test)."""
    import pandas as pd

    return pd.DataFrame([f(config, runs, missing) for f in (claim_budget, claim_kd, claim_da, claim_depth,
                                                           claim_size)])
