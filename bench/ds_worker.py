"""DeepSpeed 0.17.6's side of bench/vs_deepspeed.py; runs in its own virtualenv (never a dependency of xtc).

XTC as DeepSpeed Compression publishes it: `init_compression` with 1-bit weights (one scale group) and 8-bit
symmetric dynamic activations on Q, K, V, attention output and the FFN, its `compression_scheduler` stepped
every step, one-stage KD as in DeepSpeedExamples' BERT script (soft cross-entropy on logits + MSE of every
hidden state + MSE of every attention map, a live teacher forward per step), torch AdamW and clipping 1.0; and
plain fp32 fine-tuning of the same student for reference. It reads the batches main wrote (.npz, no pickle),
and answers each `step SETUP I` line on stdin with one `@@{json}` line: the step's thread CPU time and loss.

    /work/ds-venv/bin/python bench/ds_worker.py MODEL_DIR BATCHES.npz
"""
import copy
import json
import os
import sys
import time

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

MODULES = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", r"\d+\.output\.dense"]  # regular expressions over module names


def ds_config(bits_w=1, bits_a=8):
    return {"compression_training": {
        "weight_quantization": {
            "shared_parameters": {"enabled": True, "quantizer_kernel": False, "schedule_offset": 0,
                                  "quantize_groups": 1, "quantize_verbose": False, "quantization_type": "symmetric",
                                  "quantize_weight_in_forward": True, "rounding": "nearest",
                                  "fp16_mixed_quantize": {"enabled": False, "quantize_change_ratio": 0.1}},
            "different_groups": {"wq1": {"params": {"start_bits": bits_w, "target_bits": bits_w,
                                                    "quantization_period": 0}, "modules": MODULES}}},
        "activation_quantization": {
            "shared_parameters": {"enabled": True, "quantization_type": "symmetric", "range_calibration": "dynamic",
                                  "schedule_offset": 0},
            "different_groups": {"aq1": {"params": {"bits": bits_a}, "modules": MODULES}}}}}


def main():
    from deepspeed.compression.compress import init_compression
    from deepspeed.compression.config import get_compression_config
    from deepspeed.compression.scheduler import compression_scheduler

    model_dir, batches_file = sys.argv[1], sys.argv[2]
    data = np.load(batches_file, allow_pickle=False)
    batches = [{k: torch.from_numpy(data[f"{k}_{i}"]) for k in ("input_ids", "token_type_ids", "attention_mask",
                                                               "labels")} for i in range(int(data["count"]))]
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2,
                                                                 attn_implementation="eager").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    plain = copy.deepcopy(teacher).train()
    for p in plain.parameters():
        p.requires_grad_(True)
    student = copy.deepcopy(plain)
    cfg = ds_config()
    student = init_compression(student, cfg)
    sched = compression_scheduler(student, get_compression_config(cfg))  # as the DeepSpeed engine builds it
    opts = {"ds_qat_kd_live": torch.optim.AdamW(student.parameters(), lr=5e-5, weight_decay=0.01),
            "ds_fp32_finetune": torch.optim.AdamW(plain.parameters(), lr=5e-5, weight_decay=0.01)}

    def kd_step(batch):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            t = teacher(**inputs, output_hidden_states=True, output_attentions=True)
        s = student(**inputs, output_hidden_states=True, output_attentions=True)
        loss = -(torch.softmax(t.logits, -1) * torch.log_softmax(s.logits, -1)).sum(-1).mean()
        for a, b in zip(s.hidden_states, t.hidden_states):
            loss = loss + torch.nn.functional.mse_loss(a, b)
        for a, b in zip(s.attentions, t.attentions):
            loss = loss + torch.nn.functional.mse_loss(a, b)
        opt = opts["ds_qat_kd_live"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        return loss

    def ft_step(batch):
        out = plain(**batch)
        opt = opts["ds_fp32_finetune"]
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
        opt.step()
        return out.loss

    sched.step(step_zero_check=True)  # quantization on from step 0 (schedule_offset 0)
    steps = {"ds_qat_kd_live": kd_step, "ds_fp32_finetune": ft_step}
    print("@@" + json.dumps({"ready": True, "torch_threads": torch.get_num_threads(),
                             "quantized_modules": sum(1 for m in student.modules()
                                                      if getattr(m, "weight_quantization_enabled", False))}),
          flush=True)
    for line in sys.stdin:
        cmd, setup, i = line.split()
        t0 = time.thread_time()
        loss = steps[setup](batches[int(i)])
        cpu = time.thread_time() - t0
        print("@@" + json.dumps({"cpu": cpu, "loss": float(loss.detach())}), flush=True)


if __name__ == "__main__":
    main()
