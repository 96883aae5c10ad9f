# Stage 0: one fine-tuned teacher per task; every student of the task distils from it.


rule teacher:
    """Fine-tune the teacher (labels only) on a task; keeps the best dev checkpoint."""
    output:
        f"{RUNS}/teacher/task~{{task}}/metrics.json",
    log:
        f"{RUNS}/logs/teacher/task~{{task}}.log",
    benchmark:
        f"{RUNS}/benchmarks/teacher/task~{{task}}.tsv"
    params:
        out=run_dir,
        model=STUDY["teacher"]["model"],
        epochs=STUDY["teacher"]["epochs"],
        lr=STUDY["teacher"]["lr"],
        seed=STUDY["teacher"]["seed"],
        data=TEACHER_DATA_FLAGS,
    threads: res("teacher", "threads", 1)
    resources:
        mem_mb=res("teacher", "mem_mb", 4000),
        runtime=res("teacher", "runtime", 60),
        gpu=res("teacher", "gpu", 0),
        cpus_per_task=res("teacher", "threads", 1),
    conda:
        "../envs/xtc.yaml"
    shell:
        FRESH_RUN + "xtc finetune --task {wildcards.task} --model {params.model} --out {params.out} "
        "--epochs {params.epochs} --lr {params.lr} --seed {params.seed} {params.data} > {log} 2>&1"
