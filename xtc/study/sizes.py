"""Model sizes from the architecture alone, for claim 5: the bytes of a BERT classifier at a depth and weight
width (the recipe's packing, or the paper's counting of quantized weights only), the 1-bit ceiling of an
architecture, and the paper's "~50x" as a share of its own ceiling. Read from the teacher's config.json; no
model is loaded."""
from __future__ import annotations

import json
import math
import os

# The paper's size statement: a BERT-base teacher (12 layers) reduced to 6 layers with 1-bit weights is "~50x"
# smaller, counting the quantized weights only. Its architecture, so that the ceiling can be compared.
BERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_layers": 12, "intermediate_size": 3072,
             "max_position_embeddings": 512, "type_vocab_size": 2}
PAPER_SIZE = {"ratio": 50.0, "architecture": BERT_BASE, "depth": 6, "num_labels": 3}  # MNLI: 3 labels


def teacher_architecture(config: dict) -> dict | None:
    """The teacher's vocabulary, hidden size, depth, FFN size, positions and token types from its config.json
    (the packaged default, a local folder, or a hub id already in the local cache); None if unreadable."""
    from xtc.models import resolve_model_path

    try:
        path = resolve_model_path(config["teacher"].get("model"))
        if os.path.isdir(path):
            with open(os.path.join(path, "config.json")) as f:
                hf = json.load(f)
        else:
            from transformers import AutoConfig

            hf = AutoConfig.from_pretrained(path, local_files_only=True).to_dict()
    except Exception:  # noqa: BLE001  (any failure means: architecture unknown, which the claim reports)
        return None
    return {"vocab_size": int(hf["vocab_size"]), "hidden_size": int(hf["hidden_size"]),
            "num_layers": int(hf["num_hidden_layers"]), "intermediate_size": int(hf["intermediate_size"]),
            "max_position_embeddings": int(hf["max_position_embeddings"]),
            "type_vocab_size": int(hf.get("type_vocab_size", 2))}


def architecture_bytes(arch: dict, depth: int, wbits: int, num_labels: int = 2, groups: int = 1,
                       quantized_only: bool = False) -> int:
    """Bytes of a BERT classifier of `depth` layers with the recipe's quantized weights (Q, K, V, attention
    output, FFN in/out, word embeddings) at `wbits` (packed at the fewest bytes, plus fp32 scales: one per
    scale group, one per row of the word-embedding table) and everything else fp32 (position and token-type
    embeddings, LayerNorms, biases, pooler, classifier). quantized_only counts only the quantized weights'
    packed bits, as the paper's size figures do."""
    from xtc.quant import min_weight_bytes

    V, H, F = arch["vocab_size"], arch["hidden_size"], arch["intermediate_size"]
    matrices = [H * H] * 4 + [H * F, F * H]
    if wbits >= 32:
        q_bytes = 4 * (V * H + depth * sum(matrices))
    else:
        q_bytes = min_weight_bytes(V * H, wbits) + depth * sum(min_weight_bytes(n, wbits) for n in matrices)
        if not quantized_only:
            q_bytes += 4 * V + 4 * depth * len(matrices) * groups
    if quantized_only:
        return q_bytes
    fp32 = (arch["max_position_embeddings"] * H + arch["type_vocab_size"] * H + 2 * H  # embeddings, their LN
            + depth * (4 * H + F + H + 2 * 2 * H)  # biases of the 6 matrices, 2 LayerNorms per layer
            + H * H + H + H * num_labels + num_labels)  # pooler, classifier
    return q_bytes + 4 * fp32


def one_bit_ceiling(arch: dict, depth: int, num_labels: int = 2, quantized_only: bool = False) -> float:
    """The largest size ratio (fp32 teacher / 1-bit student of `depth` layers) the recipe can reach on this
    architecture: every quantizable weight at 1 bit, the rest fp32 as the recipe keeps it."""
    teacher = architecture_bytes(arch, arch["num_layers"], 32, num_labels)
    return teacher / architecture_bytes(arch, depth, 1, num_labels, quantized_only=quantized_only)


def paper_size_share() -> float:
    """The paper's "~50x" as a share of its own architecture's 1-bit ceiling at 6 of 12 layers, counted as the
    paper counts (quantized weights only; 53.2x): the part of the ideal that "~50x" claims."""
    p = PAPER_SIZE
    return p["ratio"] / one_bit_ceiling(p["architecture"], p["depth"], p["num_labels"], quantized_only=True)


def half_depth(num_layers: int) -> int:
    """Half the teacher's depth, rounded up (6 of 12, 3 of 6, 2 of 3)."""
    return max(1, math.ceil(num_layers / 2))
