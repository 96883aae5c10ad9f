"""Inference speed, memory and size: our integer path for packed W1A8 / W2A8 students against what a user
would pick instead (fp32 Hugging Face, bf16 autocast, torch.ao dynamic int8, ONNX Runtime int8).

All variants have the student's shape (all-MiniLM-L6-v2 by default: 6 layers, hidden 384) and the same
inputs. Timing is interleaved (one call of each variant per round, many rounds) and reports medians of wall
time and, at one thread, of the thread's CPU time (robust when other processes share the machine). Peak RSS
comes from a fresh process per variant that imports the libraries, loads the model and runs one batch; the
process resets its peak (VmHWM, /proc/self/clear_refs) after the imports and reads it after the load and after
the batch, each minus its resident memory after the imports ("bare").

    python bench/infer_speed.py --out bench/results/infer_speed.json        # full run (slow: compiles)
    python bench/infer_speed.py --quick                                      # a smoke run

Needs the optional `bench` extra (onnxruntime, onnx, onnxscript) for the ONNX Runtime variant.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

# spin-waiting threads on a shared machine: up to 40x slower. Both runtimes' threads sleep while they wait (here and
# in OrtModel): with torch's OpenMP threads spinning, they would also take a core from ONNX Runtime, which runs in
# the same process between them
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402  (after the OMP setting above)

from xtc.precision import cpu_model_name  # noqa: E402

VARIANTS = ("fp32", "bf16_autocast", "torch_dynamic_int8", "ort_int8", "w1a8_int", "w1a8_native",
            "w1a8_fake", "w2a8_int", "w2a8_native", "w2a8_fake")
# w*_int: the eager integer path (xtc.infer.load_int_model); w*_native: what `xtc predict` and xtc.infer.serve run by
# default (xtc.infer.ServedModel, engine "native": the encoder in C++, xtc.native); w*_served: ServedModel's
# "compiled" engine (Inductor, once for all shapes); w*_int_compiled: one compilation per shape (dynamic=False), an
# earlier benchmark's variant. The last two are still accepted by --variants


# ----------------------------------------------------------------------------- building the models


def build_artifacts(workdir: str, model: str = "default", num_labels: int = 2, seed: int = 0,
                    with_ort: bool = True) -> dict:
    """fp32 student folder, packed W1A8 and W2A8 students (quantized from it; speed does not depend on
    training), and the ONNX Runtime int8 model. Returns paths and file sizes."""
    from xtc.models import load_classifier, load_tokenizer, resolve_model_path
    from xtc.pack import export_packed
    from xtc.quant import QuantSpec, apply_quantization

    src = resolve_model_path(model)
    tok = load_tokenizer(src)
    out = {"fp32": os.path.join(workdir, "fp32")}
    if not os.path.isdir(out["fp32"]):
        torch.manual_seed(seed)
        m = load_classifier(src, num_labels).eval()
        m.save_pretrained(out["fp32"])
        tok.save_pretrained(out["fp32"])
    for wb in (1, 2):
        p = os.path.join(workdir, f"w{wb}a8.xtc")
        if not os.path.exists(p):
            torch.manual_seed(seed)
            m = load_classifier(src, num_labels).eval()
            apply_quantization(m, QuantSpec(wbits=wb, abits=8))
            export_packed(m, tok, p)
        out[f"w{wb}a8"] = p
    if not with_ort:
        return out
    out["ort_int8"] = os.path.join(workdir, "model.int8.onnx")
    if not os.path.exists(out["ort_int8"]):
        build_ort_int8(out["fp32"], workdir)
    return out


def build_ort_int8(fp32_dir: str, workdir: str) -> None:
    """Export to ONNX, run ONNX Runtime's BERT graph optimizer, then quantize_dynamic (QInt8 weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import BertForSequenceClassification

    m = BertForSequenceClassification.from_pretrained(fp32_dir, attn_implementation="eager").eval()
    raw, opt = os.path.join(workdir, "model.onnx"), os.path.join(workdir, "model.opt.onnx")
    ids = torch.ones(2, 16, dtype=torch.long)
    torch.onnx.export(m, (ids, torch.ones_like(ids), torch.zeros_like(ids)), raw,
                      input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["logits"],
                      dynamic_axes={k: {0: "batch", 1: "seq"} for k in ("input_ids", "attention_mask",
                                                                          "token_type_ids")},
                      opset_version=17, dynamo=False)
    c = m.config
    optimize_model(raw, model_type="bert", num_heads=c.num_attention_heads,
                   hidden_size=c.hidden_size).save_model_to_file(opt)
    import onnx

    # the fused BERT ops (Attention, SkipLayerNorm, ...) have no shape-inferred output types: say fp32
    quantize_dynamic(opt, os.path.join(workdir, "model.int8.onnx"), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


class OrtModel:
    """An ONNX Runtime session with the call signature of the torch variants."""

    def __init__(self, path: str, threads: int, spinning: bool = False):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        if not spinning:  # (ONNX Runtime's default is to spin: bench/serve_alone.py measures it alone)
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no spin-waiting, as torch's threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.names = {i.name for i in self.sess.get_inputs()}

    def __call__(self, input_ids, attention_mask, token_type_ids):
        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy(),
                "token_type_ids": token_type_ids.numpy()}
        return self.sess.run(None, {k: v for k, v in feed.items() if k in self.names})[0]


def load_variant(name: str, paths: dict, threads: int):
    """-> callable(input_ids, attention_mask, token_type_ids) for one variant."""
    from transformers import BertForSequenceClassification

    if name == "ort_int8":
        return OrtModel(paths["ort_int8"], threads)
    if name in ("fp32", "bf16_autocast", "torch_dynamic_int8"):
        m = BertForSequenceClassification.from_pretrained(paths["fp32"], attn_implementation="sdpa").eval()
        if name == "torch_dynamic_int8":
            m = torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)
        autocast = name == "bf16_autocast"
    else:
        wb, kind = name.split("_", 1)
        if kind == "fake":
            from xtc.pack import load_packed

            m = load_packed(paths[wb])[0]
        else:
            from xtc.infer import compile_int_model, load_for_serving, load_int_model

            if kind == "native":  # as xtc predict loads it (each layer packed as it loads)
                m = load_for_serving(paths[wb], "native", with_tokenizer=False)[0]
            else:
                m = load_int_model(paths[wb], with_tokenizer=False)[0]  # the fp32 variants load no tokenizer either
            if kind == "int_compiled":
                m = compile_int_model(m)
            elif kind in ("served", "native"):
                from xtc.infer import ServedModel

                m = ServedModel(m, engine="compiled" if kind == "served" else "native")
        autocast = False

    def call(input_ids, attention_mask, token_type_ids):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    return call


# ----------------------------------------------------------------------------- inputs


def random_batch(batch: int, seq: int, vocab: int = 30522, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    return ids, torch.ones_like(ids), torch.zeros_like(ids)


def dev_examples(task: str, tokenizer_dir: str, n: int, glue_dir: str | None):
    """The first n dev examples of a GLUE task, tokenized, one batch of 1 each (their real lengths)."""
    from xtc.data import encode, load_split
    from xtc.models import load_tokenizer
    from xtc.tasks import get_task

    t = get_task(task)
    enc = encode(load_split(t, "dev", glue_dir, n), load_tokenizer(tokenizer_dir), 128, t.is_regression)
    return [(torch.tensor([i]), torch.ones(1, len(i), dtype=torch.long), torch.tensor([tt]))
            for i, tt in zip(enc.input_ids, enc.token_type_ids)]


# ----------------------------------------------------------------------------- timing


def latency(fns: dict, inputs: list, rounds: int, warmup: int = 2) -> dict:
    """One pass over `inputs` per variant per round, variants interleaved (bench/common.py); per variant the
    medians of the per-round wall and thread-CPU milliseconds and the wall quartiles."""
    from common import time_interleaved  # here: the --rss-child processes import nothing of xtc before "bare"

    samples = time_interleaved(fns, inputs, rounds, warmup)
    wall = {k: s["wall"] for k, s in samples.items()}
    cpu = {k: s["cpu"] for k, s in samples.items()}

    def quartiles(v):  # inclusive: never outside the observed range (2 rounds give min and max)
        return [1e3 * q for q in statistics.quantiles(v, n=4, method="inclusive")[::2]] if len(v) > 1 else None

    return {k: {"wall_ms_median": 1e3 * statistics.median(wall[k]),
                "wall_ms_q1_q3": quartiles(wall[k]),
                "thread_cpu_ms_median": 1e3 * statistics.median(cpu[k]),
                "rounds": len(wall[k])} for k in fns}


# ----------------------------------------------------------------------------- peak memory (child process)


def _proc_status_kib(field: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident) in KiB; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: "5" to /proc/self/clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_child(variant: str, paths: dict, batch: int, seq: int) -> dict:
    """Run in a fresh process: import, load `variant`, run one batch; the peak resident memory of the load and
    of the batch, each above the process's resident memory before it ("bare": the interpreter with the
    libraries imported).

    The peak must be reset after the imports: the process's all-time peak (ru_maxrss) is often already set by
    the imports themselves (a transient allocation while loading a library), and then nothing a model does
    moves it, so "peak minus bare" reads 0 for every model. /proc/self/clear_refs resets VmHWM to the current
    RSS; where it cannot (not Linux), the all-time peak is reported and flagged."""
    import gc

    # every child imports the same libraries, including the modules transformers imports lazily on first model
    # use (BERT's modelling code alone is ~130 MiB of RSS)
    import onnxruntime  # noqa: F401
    import transformers.models.bert.modeling_bert  # noqa: F401

    import xtc.infer  # noqa: F401
    import xtc.pack  # noqa: F401
    gc.collect()
    resettable = _reset_peak_rss() and _proc_status_kib("VmHWM") is not None

    def peak() -> int:
        return _proc_status_kib("VmHWM") if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    bare = _proc_status_kib("VmRSS") if resettable else peak()
    bare_anon, bare_file = _proc_status_kib("RssAnon"), _proc_status_kib("RssFile")

    def split() -> dict:  # resident now above bare: anonymous (heap: tensors, objects) and file-backed (library code
        if bare_anon is None:  # pages a kernel's first call touches, mapped weight files)
            return {}
        return {"anon_kib": _proc_status_kib("RssAnon") - bare_anon,
                "file_kib": _proc_status_kib("RssFile") - bare_file}

    out = {"variant": variant, "batch": batch, "seq": seq, "bare_kib": bare, "peak_reset": resettable,
           "bare_peak_since_start_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    if variant == "bare":
        return {**out, "load_peak_kib": 0, "batch_peak_kib": 0, "model_kib": 0, "resident_kib": 0}
    t0 = time.perf_counter()
    fn = load_variant(variant, paths, torch.get_num_threads())
    load_seconds = time.perf_counter() - t0
    gc.collect()
    load_peak = peak() - bare
    resident = (_proc_status_kib("VmRSS") or peak()) - bare
    resident_split = split()
    if resettable:
        _reset_peak_rss()
    t0 = time.perf_counter()
    fn(*random_batch(batch, seq))
    first_batch_seconds = time.perf_counter() - t0
    batch_peak = peak() - bare
    after_batch_split = split()
    # model_kib: the whole peak above bare (load or batch, whichever is higher), the figure compared across variants
    return {**out, "load_peak_kib": load_peak, "resident_after_load_kib": resident, "batch_peak_kib": batch_peak,
            "model_kib": max(load_peak, batch_peak), "resident_after_load_split": resident_split,
            "resident_after_batch_split": after_batch_split, "load_seconds": load_seconds,
            "first_batch_seconds": first_batch_seconds, "cold_start_seconds": load_seconds + first_batch_seconds}


def measure_all_rss(result: dict, paths: dict, variants: list[str]) -> None:
    """Batch 1 for every variant, batch 32 for the fp32 baseline, ONNX Runtime and our integer path."""
    result["rss"] = {}
    for v in ["bare"] + variants:
        for batch in (1, 32):
            if batch == 32 and v not in ("bare", "fp32", "ort_int8", "w1a8_int", "w2a8_int", "w1a8_served",
                                         "w1a8_native"):
                continue
            print(f"rss {v} batch {batch}", file=sys.stderr, flush=True)
            try:
                result["rss"][f"{v}@b{batch}"] = measure_rss(v, paths, batch, 128, 1)
            except subprocess.CalledProcessError as e:
                result["rss"][f"{v}@b{batch}"] = {"error": e.stderr[-2000:]}


def measure_rss(variant: str, paths: dict, batch: int, seq: int, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--rss-child", variant, "--paths", json.dumps(paths),
           "--batch", str(batch), "--seq", str(seq)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def file_sizes(paths: dict) -> dict:
    fp32_bytes = sum(os.path.getsize(os.path.join(paths["fp32"], f)) for f in os.listdir(paths["fp32"])
                     if f.endswith(".safetensors"))
    from transformers import BertForSequenceClassification
    import io

    m = BertForSequenceClassification.from_pretrained(paths["fp32"]).eval()
    buf = io.BytesIO()
    torch.save(torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8).state_dict(), buf)
    return {"fp32_safetensors": fp32_bytes, "torch_dynamic_int8_state_dict": len(buf.getvalue()),
            "ort_int8_onnx": os.path.getsize(paths["ort_int8"]),
            "w1a8_xtc": os.path.getsize(paths["w1a8"]), "w2a8_xtc": os.path.getsize(paths["w2a8"])}


# ----------------------------------------------------------------------------- main


def machine_info() -> dict:
    return {"cpu": cpu_model_name(), "cores": os.cpu_count(),
            "loadavg_1_5_15": list(os.getloadavg()), "torch": torch.__version__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "python": platform.python_version()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/infer_speed.json")
    p.add_argument("--workdir", help="where models are built (default: a temporary folder)")
    p.add_argument("--model", default="default", help="fp32 model whose shape the students take")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--rounds-b1", type=int, default=30, help="rounds at batch 1 x 128")
    p.add_argument("--rounds-b32", type=int, default=5, help="rounds at batch 32 x 128")
    p.add_argument("--rounds-dev", type=int, default=3, help="rounds over the dev examples at batch 1")
    p.add_argument("--dev-task", default="mrpc")
    p.add_argument("--dev-examples", type=int, default=32)
    p.add_argument("--glue-dir", default=os.environ.get("XTC_GLUE_DIR"))
    p.add_argument("--quick", action="store_true", help="few rounds, no compiled variants (smoke run)")
    p.add_argument("--rss-child", help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--seq", type=int, default=128, help=argparse.SUPPRESS)
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from an existing --out JSON")
    p.add_argument("--rss-only", action="store_true", help="(re)measure peak RSS into an existing --out JSON")
    p.add_argument("--no-rss", action="store_true", help="latency only: no peak-RSS child processes")
    a = p.parse_args(argv)
    if a.rss_only:
        with open(a.out) as f:
            result = json.load(f)
        paths = build_artifacts(a.workdir, a.model)
        measure_all_rss(result, paths, [v for v in result["variants"] if not v.endswith("_compiled")])
        result["summary"] = summarize(result)
        save(a.out, result)
        plot(result, os.path.splitext(a.out)[0] + ".png")
        print(json.dumps(result["summary"], indent=1))
        return 0
    if a.plot_only:
        with open(a.out) as f:
            plot(json.load(f), os.path.splitext(a.out)[0] + ".png")
        return 0
    if a.rss_child:
        print(json.dumps(rss_child(a.rss_child, json.loads(a.paths), a.batch, a.seq)))
        return 0

    variants = [v for v in a.variants.split(",") if v]
    if a.quick:
        variants = [v for v in variants if not v.endswith(("_compiled", "_served"))]
        a.rounds_b1, a.rounds_b32, a.rounds_dev, a.dev_examples = 5, 2, 1, 8
    workdir = a.workdir or tempfile.mkdtemp(prefix="xtc-infer-bench-")
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    paths = build_artifacts(workdir, a.model)
    result = {"machine": machine_info(), "workdir": workdir, "variants": variants,
              "note": "shared machine: other workers ran during the measurements (loadavg above); wall medians "
                      "are inflated by time-slicing, thread-CPU medians (1 thread) are not",
              "sizes_bytes": file_sizes(paths), "latency": {}, "compile_seconds": {}, "rss": {}}
    shapes = {"b1_s128": (random_batch(1, 128), a.rounds_b1), "b32_s128": (random_batch(32, 128), a.rounds_b32)}
    dev = dev_examples(a.dev_task, paths["fp32"], a.dev_examples, a.glue_dir) if a.glue_dir else None
    if dev:
        result["dev_lengths"] = {"task": a.dev_task, "examples": len(dev),
                                 "mean_tokens": statistics.mean(x[0].shape[1] for x in dev)}
    for threads in [int(t) for t in a.threads.split(",")]:
        torch.set_num_threads(threads)
        fns = {}
        for v in variants:
            t0 = time.perf_counter()
            fns[v] = load_variant(v, paths, threads)
            if v.endswith(("_compiled", "_served", "_native")):  # compile (build) now, for every shape
                for x, _ in shapes.values():
                    fns[v](*x)
                result["compile_seconds"][f"{v}@{threads}t"] = time.perf_counter() - t0
        for shape, (x, rounds) in shapes.items():
            print(f"threads {threads} {shape} ...", file=sys.stderr, flush=True)
            result["latency"][f"{shape}@{threads}t"] = latency(fns, [x], rounds)
        if dev:
            eager = {k: f for k, f in fns.items() if not k.endswith("_compiled")}  # _compiled: a shape each
            print(f"threads {threads} dev lengths ...", file=sys.stderr, flush=True)
            result["latency"][f"b1_dev_{a.dev_task}@{threads}t"] = latency(eager, dev, a.rounds_dev, 1)
        del fns
        save(a.out, result)  # partial results survive a crash later on
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    if not a.no_rss:
        measure_all_rss(result, paths, [v for v in variants if not v.endswith("_compiled")])
    result["seconds"] = time.time() - t_start
    result["summary"] = summarize(result)
    save(a.out, result)
    plot(result, os.path.splitext(a.out)[0] + ".png")
    print(json.dumps(result["summary"], indent=1))
    return 0


def plot(result: dict, path: str) -> None:
    """Latency relative to fp32 (batch 1 and 32, each thread count) and loaded-model memory, one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in result["latency"] if k.startswith(("b1_s128", "b32_s128", "b1_dev"))]
    variants = [v for v in result["variants"] if any(v in result["latency"][k] for k in keys)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 1.3]})
    ax = axes[0]
    width = 0.8 / max(len(variants), 1)
    for i, v in enumerate(variants):
        vals = []
        for k in keys:
            metric = "thread_cpu_ms_median" if k.endswith("@1t") else "wall_ms_median"
            lat = result["latency"][k]
            vals.append(lat[v][metric] / lat["fp32"][metric] if v in lat else float("nan"))
        ax.bar([j + i * width for j in range(len(keys))], vals, width, label=v)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
    ax.set_xticklabels([k.replace("@", "\n") for k in keys], fontsize=8)
    ax.set_ylabel("time / fp32 time (1 thread: thread CPU; 2 threads: wall)")
    ax.set_title("latency relative to the fp32 student (lower is better)")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    mem = [(v, result["rss"].get(f"{v}@b1", {}).get("model_kib")) for v in variants]
    mem = [(v, m / 1024) for v, m in mem if m is not None]
    ax.barh([v for v, _ in mem], [m for _, m in mem], color="tab:gray")
    ax.set_xlabel("peak RSS above bare process, MiB (batch 1 x 128)")
    ax.tick_params(axis="y", labelsize=8)
    ax.invert_yaxis()
    fig.suptitle(f"{result['machine'].get('cpu')}, {result['machine'].get('cores')} cores, shared "
                 f"(load {result['machine']['loadavg_1_5_15'][0]:.0f}); torch {result['machine']['torch']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save(path: str, result: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)


def summarize(r: dict) -> dict:
    """Ratios to fp32 and the issue's three targets for the W1A8 student."""
    out = {}
    for key, lat in r["latency"].items():
        if "fp32" not in lat:
            continue
        metric = "thread_cpu_ms_median" if key.endswith("@1t") else "wall_ms_median"
        base = lat["fp32"][metric]
        if not base:
            continue
        out[key] = {"metric": metric, **{v: round(d[metric] / base, 3) for v, d in lat.items()}}
    targets = {}
    for key, lat in r["latency"].items():  # every shape and thread count: the served path against ONNX Runtime
        metric = "thread_cpu_ms_median" if key.endswith("@1t") else "wall_ms_median"
        for ours in ("w1a8_native", "w2a8_native", "w1a8_served", "w2a8_served", "w1a8_int"):
            if ours in lat and "ort_int8" in lat:
                ms, ort = lat[ours][metric], lat["ort_int8"][metric]
                targets[f"{key}: {ours} <= ort_int8"] = {"metric": metric, "ours_ms": round(ms, 2),
                                                         "ort_int8_ms": round(ort, 2), "ratio": round(ms / ort, 3),
                                                         "met": ms <= ort}
    rss = r.get("rss", {})
    for b in (1, 32):
        for ours in ("w1a8_int", "w1a8_native", "w1a8_served"):
            if rss.get(f"{ours}@b{b}", {}).get("model_kib") and rss.get(f"fp32@b{b}", {}).get("model_kib"):
                ratio = rss[f"{ours}@b{b}"]["model_kib"] / rss[f"fp32@b{b}"]["model_kib"]
                targets[f"peak memory above bare, batch {b}: {ours} <= 0.3 x fp32"] = {"ratio": round(ratio, 3),
                                                                                      "met": ratio <= 0.3}
    out["targets"] = targets
    return out


if __name__ == "__main__":
    sys.exit(main())
