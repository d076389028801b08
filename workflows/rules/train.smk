# Training (one job per run, or one ensemble job for all seeds of a circuit x variant) and held-out evaluation.

rule train:
    wildcard_constraints:
        circuit=SINGLE_RUN_CIRCUIT,
    input:
        spec=spec_of,
    output:
        model=f"{RESULTS}/{{circuit}}/{{variant}}/seed{{seed}}/model.pt",
        train=f"{RESULTS}/{{circuit}}/{{variant}}/seed{{seed}}/train.nc",
    log:
        f"{RESULTS}/logs/train/{{circuit}}_{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{circuit}}_{{variant}}_seed{{seed}}.tsv"
    params:
        overrides=run_overrides,
        out=lambda w: run_dir(w.circuit, w.variant, w.seed),
    threads: 1
    resources:
        gpu=uses_gpu(),
        mem_mb=4000,
        runtime=240,
    shell:
        THREADS_ENV + " recircuit train {input.spec} --circuit {wildcards.circuit} --variant {wildcards.variant}"
        " --seed {wildcards.seed} --out {params.out} {params.overrides} > {log} 2>&1"


rule train_ensemble:
    wildcard_constraints:
        circuit=ENSEMBLE_CIRCUIT,
    input:
        spec=spec_of,
    output:
        [f"{RESULTS}/{{circuit}}/{{variant}}/seed{seed}/{name}" for seed in SWEEP.seeds for name in ("model.pt", "train.nc")],
    log:
        f"{RESULTS}/logs/train/{{circuit}}_{{variant}}_ensemble.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_ensemble/{{circuit}}_{{variant}}.tsv"
    params:
        overrides=run_overrides,
        out=lambda w: run_dir(w.circuit, w.variant, "{seed}"),
        seeds=" ".join(map(str, SWEEP.seeds)),
    threads: 1
    resources:
        gpu=uses_gpu(),
        mem_mb=8000,
        runtime=480,
    shell:
        THREADS_ENV + " recircuit train-ensemble {input.spec} --circuit {wildcards.circuit} --variant {wildcards.variant}"
        " --seeds {params.seeds} --out {params.out} {params.overrides} > {log} 2>&1"


rule evaluate:
    wildcard_constraints:
        circuit=SINGLE_RUN_CIRCUIT,
    input:
        model=rules.train.output.model,
    output:
        f"{RESULTS}/{{circuit}}/{{variant}}/seed{{seed}}/waking.nc",
    log:
        f"{RESULTS}/logs/evaluate/{{circuit}}_{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{circuit}}_{{variant}}_seed{{seed}}.tsv"
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=30,
    shell:
        THREADS_ENV + " recircuit evaluate $(dirname {input.model}) --out {output} --device cpu > {log} 2>&1"


rule evaluate_ensemble:
    wildcard_constraints:
        circuit=ENSEMBLE_CIRCUIT,
    input:
        [f"{RESULTS}/{{circuit}}/{{variant}}/seed{seed}/model.pt" for seed in SWEEP.seeds],
    output:
        [f"{RESULTS}/{{circuit}}/{{variant}}/seed{seed}/waking.nc" for seed in SWEEP.seeds],
    log:
        f"{RESULTS}/logs/evaluate/{{circuit}}_{{variant}}_ensemble.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_ensemble/{{circuit}}_{{variant}}.tsv"
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=60,
    shell:
        THREADS_ENV + " recircuit evaluate $(for m in {input}; do dirname $m; done) --device cpu > {log} 2>&1"
