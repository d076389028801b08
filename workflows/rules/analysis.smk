# Analyses of trained circuits. Each block is switched on by the sweep config's `analyses` section.

NORMALIZATION_JOBS = [job for job in SWEEP.jobs() if job[0] in SWEEP.analyses.normalization]


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
