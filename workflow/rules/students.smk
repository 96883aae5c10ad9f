# Stages 1-2: every student of the grid, one `xtc compress` each. The wildcards are the Paramspace columns
# of xtc.study.STUDENT_COLS, so the folder names every setting and a run shared by several axes exists once.
#   init~teacher: layer reduction (--layers k) and/or quantization straight from the teacher;
#   init~step1:   XTC step 2, quantization starting from the fp32 layer-reduced step-1 run.


rule student:
    """Train one student: layer reduction, weight/activation quantization and KD as its folder name says."""
    input:
        unpack(student_inputs),
    output:
        f"{RUNS}/student/{STUDENT}/metrics.json",
    log:
        f"{RUNS}/logs/student/{STUDENT}.log",
    benchmark:
        f"{RUNS}/benchmarks/student/{STUDENT}.tsv"
    params:
        out=run_dir,
        teacher=lambda wildcards, input: os.path.dirname(input.teacher),
        start=student_start_flags,
        data=DATA_FLAGS,
    threads: res("student", "threads", 1)
    resources:
        mem_mb=res("student", "mem_mb", 4000),
        runtime=res("student", "runtime", 60),
        gpu=res("student", "gpu", 0),
        cpus_per_task=res("student", "threads", 1),
    conda:
        "../envs/xtc.yaml"
    shell:
        FRESH_RUN + "xtc compress --task {wildcards.task} --teacher {params.teacher} --out {params.out} "
        "{params.start} --wbits {wildcards.wbits} --abits {wildcards.abits} --kd {wildcards.kd} "
        "--epochs {wildcards.epochs} --lr {wildcards.lr} --seed {wildcards.seed} {params.data} > {log} 2>&1"
