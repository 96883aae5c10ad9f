# TinyBERT-style augmentation, once per task; every DA=on student of the task reads the same file.


rule augment:
    """Write the task's training examples plus N augmented copies (JSONL for `xtc compress --train-file`)."""
    input:
        teacher=paths.metrics_file(RUNS, paths.teacher_run_id("{task}")),
    output:
        paths.augment_file(RUNS, "{task}"),
    log:
        paths.log_file(RUNS, paths.augment_job("{task}")),
    benchmark:
        paths.benchmark_file(RUNS, paths.augment_job("{task}"))
    params:
        # candidates come from augment.model: its masked-LM head if it has one, else its word embeddings
        # (default: the task's fine-tuned teacher); the flags are built once, xtc.study.augment_flags
        args=lookup(dpath="{task}", within=AUGMENT_ARGS),
    threads: res("augment", "threads", 1)
    resources:
        mem_mb=res("augment", "mem_mb", 4000),
        runtime=res("augment", "runtime", 30),
        gpu=res("augment", "gpu", 0),
        gpu_slots=res("augment", "gpu_slots", 0),
        cpus_per_task=res("augment", "threads", 1),
    conda:
        "../envs/xtc.yaml"
    shell:
        "xtc augment {params.args} > {log:q} 2>&1"
