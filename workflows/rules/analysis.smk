# Analyses of trained circuits. The sweep config's `analyses` section lists the circuits each one covers.

NORMALIZATION_JOBS = SWEEP.jobs_for("normalization")
CURVATURE_JOBS = SWEEP.jobs_for("curvature")


rule curvature:
    input:
        model=rules.train.output.model,
    output:
        f"{RESULTS}/{{circuit}}/{{variant}}/seed{{seed}}/curvature.nc",
    log:
        f"{RESULTS}/logs/curvature/{{circuit}}_{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/curvature/{{circuit}}_{{variant}}_seed{{seed}}.tsv"
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=60,
    shell:
        THREADS_ENV + " recircuit curvature $(dirname {input.model}) --out {output} --device cpu > {log} 2>&1"


rule normalization_summary:
    input:
        train=run_files("train.nc", NORMALIZATION_JOBS),
        waking=run_files("waking.nc", NORMALIZATION_JOBS),
    output:
        f"{RESULTS}/summary/normalization.nc",
    log:
        f"{RESULTS}/logs/normalization_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/normalization_summary/all.tsv"
    params:
        runs=lambda w: [run_dir(*job) for job in NORMALIZATION_JOBS],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        THREADS_ENV + " recircuit normalization-summary {params.runs} --out {output} > {log} 2>&1"
