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


REACTIVATION_JOBS = SWEEP.jobs_for("reactivation")
REACTIVATION_GROUPS = sorted({(c, s) for c, _, s in REACTIVATION_JOBS})


def reactivation_runs(circuit, seed):
    """label=run_dir for every variant of a circuit at one seed, `noisy` first (it also gives the untrained and
    uniform rows)."""
    variants = sorted(SWEEP.circuits[circuit].variants, key=lambda v: v != "noisy")
    return [(v, run_dir(circuit, v, seed)) for v in variants]


rule quiesce:
    input:
        model=rules.train.output.model,
        waking=rules.evaluate.output[0],
    output:
        f"{RESULTS}/{{circuit}}/{{variant}}/seed{{seed}}/quiescence.nc",
    log:
        f"{RESULTS}/logs/quiesce/{{circuit}}_{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/quiesce/{{circuit}}_{{variant}}_seed{{seed}}.tsv"
    params:
        overrides=analysis_overrides("reactivation"),
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=30,
    shell:
        THREADS_ENV + " recircuit quiesce $(dirname {input.model}) --out {output} --device cpu {params.overrides} > {log} 2>&1"


rule reactivation:
    input:
        lambda w: [f"{d}/{name}" for _, d in reactivation_runs(w.circuit, w.seed) for name in ("waking.nc", "quiescence.nc")],
    output:
        f"{RESULTS}/reactivation/{{circuit}}/seed{{seed}}.nc",
    log:
        f"{RESULTS}/logs/reactivation/{{circuit}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/reactivation/{{circuit}}_seed{{seed}}.tsv"
    params:
        runs=lambda w: " ".join(f"--run {label}={d}" for label, d in reactivation_runs(w.circuit, w.seed)),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        THREADS_ENV + " recircuit reactivation {params.runs} --circuit {wildcards.circuit} --seed {wildcards.seed}"
        " --out {output} > {log} 2>&1"


SPIKING_JOBS = SWEEP.jobs_for("spiking")


rule spike:
    input:
        model=rules.train.output.model,
        waking=rules.evaluate.output[0],
    output:
        f"{RESULTS}/{{circuit}}/{{variant}}/seed{{seed}}/spiking.nc",
    log:
        f"{RESULTS}/logs/spike/{{circuit}}_{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/spike/{{circuit}}_{{variant}}_seed{{seed}}.tsv"
    params:
        build=f"{RESULTS}/.brian_build",  # one Brian2 build per network size, shared by the sweep (locked)
        overrides=analysis_overrides("reactivation", "spiking"),
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=60,
    shell:
        THREADS_ENV + " recircuit spike $(dirname {input.model}) --out {output} --build-dir {params.build}"
        " {params.overrides} > {log} 2>&1"
