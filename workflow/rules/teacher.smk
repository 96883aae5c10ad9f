# Stage 0: one fine-tuned teacher per task; every student of the task distils from it. The run's flags
# come from the runs table (xtc.study.study_runs), looked up by its id `teacher/task~T`.


rule teacher:
    """Fine-tune the teacher (labels only) on a task; keeps the best dev checkpoint."""
    output:
        paths.metrics_file(RUNS, "{run}"),
    log:
        paths.log_file(RUNS, "{run}"),
    benchmark:
        paths.benchmark_file(RUNS, "{run}")
    wildcard_constraints:
        run=paths.TEACHER_RUN_RE,
    params:
        out=run_folder,
        state=run_state,
        args=run_args(),
    # first: every student of the task waits for it (the longest teacher would otherwise start last)
    priority: 10
    threads: res("teacher", "threads", 1)
    resources:
        mem_mb=res("teacher", "mem_mb", 4000),
        runtime=res("teacher", "runtime", 60),
        gpu=res("teacher", "gpu", 0),
        gpu_slots=res("teacher", "gpu_slots", 0),
        cpus_per_task=res("teacher", "threads", 1),
    conda:
        "../envs/xtc.yaml"
    shell:
        FRESH_RUN + "xtc finetune {params.args} > {log:q} 2>&1"
