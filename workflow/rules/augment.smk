# TinyBERT-style augmentation, once per task; every DA=on student of the task reads the same file.


rule augment:
    """Write the task's training examples plus N augmented copies (JSONL for `xtc compress --train-file`)."""
    input:
        teacher=f"{RUNS}/teacher/task~{{task}}/metrics.json",
    output:
        study.augment_file(RUNS, "{task}"),
    log:
        f"{RUNS}/logs/augment/task~{{task}}.log",
    benchmark:
        f"{RUNS}/benchmarks/augment/task~{{task}}.tsv"
    params:
        # candidates come from this model: its masked-LM head if it has one, else its word embeddings
        model=lambda wildcards, input: STUDY["augment"].get("model") or os.path.dirname(input.teacher),
        copies=STUDY["augment"]["copies"],
        replace_prob=STUDY["augment"]["replace_prob"],
        candidates=STUDY["augment"]["candidates"],
        seed=STUDY["augment"]["seed"],
        pair_mode=STUDY["augment"]["pair_mode"],
        stop_words="--replace-stop-words" if STUDY["augment"]["replace_stop_words"] else "",
        data=study.augment_flags(STUDY),
    threads: res("augment", "threads", 1)
    resources:
        mem_mb=res("augment", "mem_mb", 4000),
        runtime=res("augment", "runtime", 30),
        gpu=res("augment", "gpu", 0),
        cpus_per_task=res("augment", "threads", 1),
    conda:
        "../envs/xtc.yaml"
    shell:
        "xtc augment --task {wildcards.task} --teacher {params.model} --out {output} --copies {params.copies} "
        "--replace-prob {params.replace_prob} --candidates {params.candidates} --seed {params.seed} "
        "--pair-mode {params.pair_mode} {params.stop_words} {params.data} --overwrite --quiet > {log} 2>&1"
