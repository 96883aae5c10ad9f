"""TinyBERT-style data augmentation (XTC recipe, "Data augmentation").

Every training example is written once as is (copy 0) and then `copies` times with each word replaced, with
probability `replace_prob`, by one of its `candidates` best candidates, chosen uniformly:
  - single-piece words, when the teacher has a masked-LM head: the head's top predictions for the word masked
    in context (TinyBERT's input: [CLS] masked sentence [SEP] original sentence [SEP]);
  - otherwise (no head, multi-piece words, words truncated out of the MLM window): the nearest whole-word
    vocabulary entries by cosine similarity in the teacher's word-embedding table, a multi-piece word being
    the mean of its pieces. These are computed once per distinct word of the corpus.
A "word" is a whitespace-separated token of the GLUE text; leading/trailing punctuation stays in place
("film," -> "movie,"), and tokens that are pure punctuation or contain a special token are never replaced.
Candidates are whole-word vocabulary entries only: no "##" pieces, special or [unused] tokens, pure
punctuation, nor the word itself. As in TinyBERT, two things keep the teacher's labels meaningful:
  - stop words ("is", "not", "the", ...; scikit-learn's English list) are never replaced, so negations and
    the sentence frame survive;
  - for sentence pairs each copy rewrites one sentence and keeps the other as it is (copies alternate between
    the two), so the relation the label depends on (paraphrase, entailment) is not destroyed on both sides.
    Rewriting both at once (`pair_mode="both"`) makes the teacher label most MRPC copies "not paraphrase".
Output: JSON Lines for `xtc compress --train-file` (see `xtc.data.read_train_file`); the teacher labels the
examples through KD, so no labels are written.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import unicodedata
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from tqdm.auto import tqdm

from xtc.config import AugmentConfig, RunOptions
from xtc.data import load_split, select_training_rows, take_rows
from xtc.files import atomic_write, check_out_file, exclusive_writer
from xtc.models import check_local_model_path, load_classifier, load_tokenizer, quiet_hf_loading, resolve_model_path
from xtc.tasks import get_task

SHORTLIST_EXTRA = 16  # float32 shortlist margin before the exact float64 re-ranking of neighbours
MLM_BLOCK = 256  # examples whose masked-LM queries are batched together (bounds memory on big tasks)
MLM_BATCH_TOKENS = 8192  # padded tokens per masked-LM forward
_BRACKETED = re.compile(r"^\[[^\]]*\]$")  # [PAD], [unused12], ...
_SPACE = re.compile(r"(\s+)")


# ----------------------------------------------------------------------------- the teacher's vocabulary
@dataclass
class Teacher:
    tokenizer: object
    tokens: list[str]  # id -> vocabulary entry ("" for ids the tokenizer does not know)
    valid: np.ndarray  # bool [V]: may be proposed as a replacement
    emb: torch.Tensor  # float32 [V, d] word embeddings
    mlm: torch.nn.Module | None  # BertForMaskedLM when the checkpoint has a trained head
    max_length: int
    lowercases: bool

    def normalize(self, s: str) -> str:
        """What the tokenizer makes of `s` before WordPiece (lower-casing, accent stripping when uncased)."""
        norm = getattr(getattr(self.tokenizer, "backend_tokenizer", None), "normalizer", None)
        if norm is not None:
            return norm.normalize_str(s)
        return s.lower() if self.lowercases else s


def load_teacher(name: str) -> Teacher:
    """Tokenizer, word embeddings and (when the checkpoint really has one) the masked-LM head of `name`."""
    from transformers import AutoConfig, BertForMaskedLM

    path = resolve_model_path(name)
    check_local_model_path(path)
    if os.path.isfile(path):
        raise ValueError(f"--teacher {path} is a file (a packed student?); augmentation needs the fp32 teacher folder "
                         f"(or hub id) whose vocabulary and embeddings propose the replacements")
    try:
        with quiet_hf_loading():  # "newly initialised cls.*" is expected for heads we then discard
            model_type = AutoConfig.from_pretrained(path).model_type
            if model_type == "bert":
                model, info = BertForMaskedLM.from_pretrained(path, output_loading_info=True, dtype=torch.float32)
            else:  # other families: word-embedding neighbours only (the masked-LM path reads BERT's head)
                model = load_classifier(path)  # refuses a model xtc cannot map, in one line
                info = {"missing_keys": ["cls.predictions.transform.dense.weight"]}
            tok = load_tokenizer(path)
    except OSError as exc:
        raise FileNotFoundError(f"cannot load a BERT model from --teacher {path!r}: {exc}. Pass a local Hugging "
                                f"Face model folder, a hub id (when online) or 'default'") from exc
    # A bare encoder (the default all-MiniLM-L6-v2) or a fine-tuned classifier has no trained head: its
    # cls.predictions.* would be random. The decoder is tied to the embeddings, so it never counts.
    missing = [k for k in info["missing_keys"]
               if k.startswith("cls.predictions.") and not k.startswith("cls.predictions.decoder.")]
    emb = model.get_input_embeddings().weight.detach().float().contiguous()
    V = emb.shape[0]
    tokens = [""] * V
    for t, i in tok.get_vocab().items():
        if i < V:
            tokens[i] = t
    specials = set(tok.all_special_tokens)
    if not any(t.startswith("##") for t in tokens):  # byte-level BPE (RoBERTa) or SentencePiece (XLM-R, DeBERTa)
        # a vocabulary entry is a whole-word candidate only where it starts a word ("Ġgood", "▁good"), and it is
        # proposed as the text it decodes to ("good"), never as the raw piece
        tokens = [(lambda text: text[1:] if text.startswith(" ") and t not in specials else "")(
            tok.convert_tokens_to_string([t])) if t else "" for t in tokens]
    valid = np.array([bool(t) and not t.startswith("##") and t not in specials and not _BRACKETED.match(t)
                      and any(c.isalnum() for c in t) for t in tokens])
    lowercases = bool(getattr(tok, "do_lower_case", False))
    norm = getattr(getattr(tok, "backend_tokenizer", None), "normalizer", None)
    if norm is not None:
        lowercases = norm.normalize_str("A") == "a"
    return Teacher(tok, tokens, valid, emb, None if missing else model.eval(),
                   min(int(model.config.max_position_embeddings), 512), lowercases)


# ----------------------------------------------------------------------------- words
def _is_punct(ch: str) -> bool:
    # BERT's definition: ASCII non-alphanumerics count too ("$", "`"), so our split matches its pre-tokenizer.
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


@dataclass
class Word:
    """One distinct whitespace token of the corpus."""
    prefix: str
    core: str
    suffix: str
    key: str | None  # normalised core; None: never replaced
    case: int  # 0 as is, 1 capitalise, 2 upper-case the replacement (uncased vocab, cased text)
    ids: list[int]  # the core's word pieces
    context: list[int]  # prefix + core + suffix pieces, for the masked-LM input
    offset: int  # position of the core's first piece in `context`


def analyse_words(teacher: Teacher, tokens: list[str], keep: frozenset[str] = frozenset()) -> dict[str, Word]:
    """Split each distinct token into punctuation prefix / core / suffix and tokenize the parts (batched).
    Words whose normalised core is in `keep` (e.g. stop words) get no key: they are never replaced."""
    tok = teacher.tokenizer
    specials = [s for s in tok.all_special_tokens if s]
    parts = []
    for t in tokens:
        if any(s in t for s in specials):
            parts.append(("", t, "", False))  # "[CLS]" would otherwise strip to "CLS"
            continue
        i, j = 0, len(t)
        while i < j and _is_punct(t[i]):
            i += 1
        while j > i and _is_punct(t[j - 1]):
            j -= 1
        parts.append((t[:i], t[i:j], t[j:], any(c.isalnum() for c in t[i:j])))
    strings = sorted({s for p in parts for s in p[:3] if s})
    ids = dict(zip(strings, tok(strings, add_special_tokens=False)["input_ids"])) if strings else {}
    unk = tok.unk_token_id
    out = {}
    for t, (pre, core, suf, ok) in zip(tokens, parts):
        core_ids = ids.get(core, [])
        pre_ids = ids.get(pre, [])
        ok = ok and any(i != unk for i in core_ids)
        key = teacher.normalize(core) if ok else None
        key = None if key in keep else key
        case = 0
        if ok and teacher.lowercases and core[:1].isupper():
            case = 2 if len(core) > 1 and core.isupper() else 1
        out[t] = Word(pre, core, suf, key, case, core_ids, pre_ids + core_ids + ids.get(suf, []), len(pre_ids))
    return out


def _recase(word: str, case: int) -> str:
    return word if case == 0 else word.upper() if case == 2 else word[:1].upper() + word[1:]


# ----------------------------------------------------------------------------- candidates
def neighbour_candidates(teacher: Teacher, words: dict[str, list[int]], k: int, chunk: int = 512,
                         quiet: bool = True) -> dict[str, list[str]]:
    """For each word (key -> its piece ids), the `k` whole-word vocabulary entries nearest by cosine similarity
    to the mean of its pieces' embeddings, best first. A float32 matmul against the normalised table (chunked
    to bound memory) shortlists k+16; the shortlist is re-ranked in float64 numpy with ties broken by id, so
    the result does not depend on BLAS threading."""
    keys = sorted(words)
    if not keys:
        return {}
    raw = teacher.emb.double().numpy()
    E64 = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    E32 = torch.from_numpy(E64.astype(np.float32))
    bias = torch.from_numpy(np.where(teacher.valid, 0.0, -np.inf).astype(np.float32))
    index = {t: i for i, t in enumerate(teacher.tokens) if t}
    unk = teacher.tokenizer.unk_token_id
    m = min(k + SHORTLIST_EXTRA, len(teacher.tokens))
    out = {}
    bar = tqdm(total=len(keys), desc="neighbours", unit="word", disable=quiet or not sys.stderr.isatty())
    for start in range(0, len(keys), chunk):
        part = keys[start:start + chunk]
        Q = np.stack([raw[[i for i in words[w] if i != unk]].mean(0) for w in part])
        Q = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)
        S = torch.from_numpy(Q.astype(np.float32)) @ E32.T + bias
        own = [(r, index[w]) for r, w in enumerate(part) if w in index]
        if own:  # never propose the word itself
            r, c = zip(*own)
            S[list(r), list(c)] = -np.inf
        vals, top = S.topk(m, dim=1)
        top, finite = top.numpy(), torch.isfinite(vals).numpy()
        exact = np.einsum("nd,nkd->nk", Q, E64[top])
        for r, w in enumerate(part):
            ids, score = top[r][finite[r]], exact[r][finite[r]]
            order = np.lexsort((ids, -score))  # best first, ties by id
            out[w] = [teacher.tokens[i] for i in ids[order][:k]]
        bar.update(len(part))
    bar.close()
    return out


@dataclass
class MaskJob:
    context: list[int]  # the sentence's word pieces
    pos: int  # position of the word to mask in `context`
    own: int  # its id (never proposed)


def mlm_candidates(teacher: Teacher, jobs: list[MaskJob], k: int) -> list[list[str] | None]:
    """The masked-LM head's top-`k` whole-word predictions for each job, best first (None when the word lies
    beyond the model's window). Inputs are [CLS] masked [SEP] original [SEP] as in TinyBERT; all jobs are
    sorted by length and run in padded batches, and the head runs on the masked positions only."""
    tok, L = teacher.tokenizer, teacher.max_length
    cls_id, sep_id, mask_id, pad_id = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id, tok.pad_token_id or 0
    seqs = []
    for j in jobs:
        if j.pos >= L - 2:
            seqs.append(None)
            continue
        a = list(j.context)
        a[j.pos] = mask_id
        if len(a) > L - 2:
            a, b = a[:L - 2], []
        else:
            b = j.context[:max(0, L - 3 - len(a))]
        ids = [cls_id] + a + [sep_id] + (b + [sep_id] if b else [])
        seqs.append((ids, len(a) + 2, j.pos + 1))
    out: list[list[str] | None] = [None] * len(jobs)
    order = sorted((i for i, s in enumerate(seqs) if s), key=lambda i: len(seqs[i][0]))
    bias = torch.from_numpy(np.where(teacher.valid, 0.0, -np.inf).astype(np.float32))
    m = min(k + SHORTLIST_EXTRA, len(teacher.tokens))
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and len(seqs[order[end]][0]) * (end + 1 - start) <= MLM_BATCH_TOKENS:
            end += 1
        batch = order[start:end]
        width = len(seqs[batch[-1]][0])
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        types = torch.zeros_like(ids)
        att = torch.zeros_like(ids)
        for r, i in enumerate(batch):
            s, n_a, _ = seqs[i]
            ids[r, :len(s)] = torch.tensor(s)
            types[r, n_a:len(s)] = 1
            att[r, :len(s)] = 1
        rows = torch.arange(len(batch))
        pos = torch.tensor([seqs[i][2] for i in batch])
        with torch.inference_mode():
            h = teacher.mlm.bert(input_ids=ids, attention_mask=att, token_type_ids=types).last_hidden_state
            logits = teacher.mlm.cls(h[rows, pos]).float() + bias
            logits[rows, torch.tensor([jobs[i].own for i in batch])] = -np.inf
            vals, top = logits.topk(m, dim=1)
        vals, top = vals.numpy(), top.numpy()
        for r, i in enumerate(batch):
            keep = np.isfinite(vals[r])
            order_r = np.lexsort((top[r][keep], -vals[r][keep]))
            out[i] = [teacher.tokens[t] for t in top[r][keep][order_r][:k]]
        start = end
    return out


# ----------------------------------------------------------------------------- augmentation
def augment(task_name: str, teacher_dir: str, out_file: str, cfg: AugmentConfig | None = None,
            glue_dir: str | None = None, overwrite: bool = False, quiet: bool = False,
            data: RunOptions | None = None) -> dict:
    """Write the students' training examples (drawn by `cfg.max_train_samples` and `data`'s subset, data_seed
    and validation_samples, as `xtc compress` draws them) plus `cfg.copies` augmented copies of every example to
    `out_file` (JSONL). Row r of the training split draws from its own generator seeded (seed, r): the output
    is a pure function of the arguments, and a row's copies come out the same whatever --max-train-samples is."""
    t0 = time.time()
    cfg, data = cfg or AugmentConfig(), data or RunOptions()
    copies, replace_prob, candidates, seed = cfg.copies, cfg.replace_prob, cfg.candidates, cfg.seed
    task = get_task(task_name)
    check_out_file(out_file)
    with exclusive_writer(out_file, "augmentation file"):  # one writer, from the start
        if os.path.exists(out_file) and not overwrite:
            raise FileExistsError(f"{out_file} already exists; pass --overwrite to replace it or choose another --out")
        full = load_split(task, "train", glue_dir)
        selection = select_training_rows(task, full, cfg.max_train_samples, data.validation_samples, data.subset,
                                         data.data_seed)
        split = take_rows(full, selection.train)
        teacher = load_teacher(teacher_dir)

        # Every distinct token once: its analysis, and neighbour candidates for whichever words need them.
        sentences = [s for ex in split.texts for s in ex]
        words = analyse_words(teacher, sorted({w for s in sentences for w in _SPACE.split(s)[::2] if w}),
                              keep=frozenset() if cfg.replace_stop_words else ENGLISH_STOP_WORDS)
        need = {w.key: w.ids for w in words.values() if w.key is not None
                and (teacher.mlm is None or len(w.ids) > 1)}
        neighbours = neighbour_candidates(teacher, need, candidates, quiet=quiet)

        os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
        stats = {"eligible": 0, "replaced": 0, "mlm": 0, "neighbours": 0}
        examples = []
        bar = tqdm(total=len(split), desc=f"augment {task.name}", unit="ex", disable=quiet or not sys.stderr.isatty())
        try:  # atomic: a crash never leaves a truncated file under the final name
            with atomic_write(out_file, "w", encoding="utf-8", newline="\n", what="the augmented data") as f:
                for b0 in range(0, len(split), MLM_BLOCK):
                    block = split.texts[b0:b0 + MLM_BLOCK]
                    mlm, fallback = _block_mlm(teacher, words, block, candidates) if teacher.mlm is not None \
                        else ({}, {})
                    neighbours.update(neighbour_candidates(
                        teacher, {k: v for k, v in fallback.items() if k not in neighbours}, candidates))
                    for i, texts in enumerate(block, b0):
                        rows = _augment_example(texts, words, neighbours, mlm, copies, replace_prob,
                                                np.random.default_rng([seed, selection.train[i]]), stats,
                                                cfg.pair_mode == "one")
                        for c, row in enumerate(rows):  # source: the example's row in the training split
                            obj = {"text_a": row[0], **({"text_b": row[1]} if task.is_pair else {}),
                                   "source": selection.train[i], "copy": c}
                            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
                        if len(examples) < 5 and copies:
                            examples.append({"original": list(rows[0]), "augmented": list(rows[1])})
                        bar.update(1)
        finally:
            bar.close()
        used = [name for name, n in (("mlm", stats["mlm"]), ("neighbours", stats["neighbours"])) if n]
        return {
            "task": task.name, "teacher": resolve_model_path(teacher_dir), "out": out_file,
            "examples_in": len(split), "examples_out": len(split) * (copies + 1), "data": selection.record,
            "copies": copies, "replace_prob": replace_prob, "candidates": candidates, "seed": seed,
            "pair_mode": cfg.pair_mode if task.is_pair else None, "replace_stop_words": cfg.replace_stop_words,
            "path": "both" if len(used) == 2 else used[0] if used else "none", "mlm_head": teacher.mlm is not None,
            "replaced_fraction": stats["replaced"] / stats["eligible"] if stats["eligible"] else 0.0,
            "eligible_word_slots": stats["eligible"], "distinct_words": len({w.key for w in words.values() if w.key}),
            "seconds": round(time.time() - t0, 2), "bytes": os.path.getsize(out_file), "examples": examples,
        }


def _block_mlm(teacher: Teacher, words: dict[str, Word], block: list[tuple[str, ...]], k: int):
    """Masked-LM candidates for every single-piece word of the block's distinct sentences, keyed by
    (sentence, token index); plus {key: piece ids} of the words beyond the model's window (they fall back
    to neighbours)."""
    slots, jobs = [], []
    for s in sorted({s for ex in block for s in ex}):
        toks = _SPACE.split(s)[::2]
        context, starts = [], []
        for t in toks:
            starts.append(len(context))
            if t:
                context += words[t].context
        for j, t in enumerate(toks):
            w = words.get(t)
            if w is not None and w.key is not None and len(w.ids) == 1:
                slots.append((s, j, w))
                jobs.append(MaskJob(context, starts[j] + w.offset, w.ids[0]))
    mlm, fallback = {}, {}
    for (s, j, w), c in zip(slots, mlm_candidates(teacher, jobs, k)):
        if c:
            mlm[(s, j)] = c
        else:
            fallback[w.key] = w.ids
    return mlm, fallback


def _augment_example(texts, words, neighbours, mlm, copies, p, rng, stats, one_side: bool = True
                     ) -> list[tuple[str, ...]]:
    """The original example and its `copies` augmented versions. With `one_side`, copy c of a pair rewrites
    sentence c % 2 only; otherwise the sentences of a pair draw independently."""
    sents = []  # per sentence: its parts (tokens at even indices, whitespace between) and replaceable slots
    for s in texts:
        parts = _SPACE.split(s)
        slots = []
        for j in range(0, len(parts), 2):
            w = words.get(parts[j])
            if w is None or w.key is None:
                continue
            c = mlm.get((s, j // 2))
            source = "mlm" if c else "neighbours"
            c = c or neighbours.get(w.key)
            if c:
                slots.append((j, c, w))
                stats[source] += 1
        sents.append((parts, slots))
    n = sum(len(sl) for _, sl in sents)
    rows = [tuple(texts)]
    if not copies:
        return rows
    replace, pick = np.zeros((copies, 0), bool), None
    eligible = np.ones((copies, n), bool)
    if one_side and len(sents) > 1:  # copy c may touch only the words of sentence c % 2
        owner = np.repeat(np.arange(len(sents)), [len(sl) for _, sl in sents])
        eligible = owner[None, :] == (np.arange(copies) % len(sents))[:, None]
    if n:  # one draw per (copy, word): replace or not, and which candidate
        replace = (rng.random((copies, n)) < p) & eligible
        pick = rng.integers(0, [len(c) for _, sl in sents for _, c, _ in sl], size=(copies, n))
    stats["eligible"] += int(eligible.sum())
    stats["replaced"] += int(replace.sum())
    for c in range(copies):
        row, base = [], 0
        for parts, slots in sents:
            new = list(parts)
            for r in np.flatnonzero(replace[c, base:base + len(slots)]):
                j, cands, w = slots[r]
                new[j] = w.prefix + _recase(cands[pick[c, base + r]], w.case) + w.suffix
            row.append("".join(new))
            base += len(slots)
        rows.append(tuple(row))
    return rows
