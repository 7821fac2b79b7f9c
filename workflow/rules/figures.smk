# Evaluations and training logs → the transfer table and figure (finding 3) and, per sweep, the
# training curves, the sparsity–reconstruction (Pareto) plot and the SAEs' quality checks.


# Finding 3's baselines per (model, layer): PCA fitted on the source at k = the SAE's L0 on the target, and
# the source SAE with b_dec re-centred on the target's mean. A GPU job at paper scale: every transfer SAE
# encodes the target's evaluation split once more.
rule transfer_baselines:
    input:
        unpack(baseline_inputs),
    output:
        BASELINES,
    log:
        log("transfer_baselines", "{model}/layer{layer}"),
    benchmark:
        benchmark("transfer_baselines", "{model}/layer{layer}")
    conda:
        "../../envs/vitsae.yaml"
    threads: 2
    resources:
        gpu=1,
        cpus_per_gpu=2,
        mem_mb=scaled(16000),
        runtime=scaled(240),
    params:
        datasets=DATASETS,
        train_split=transfer_train_split(),
        eval_split=RUN.evaluation.split,
        max_tokens=RUN.transfer.baseline_tokens,
        seed=RUN.seed,
        code=code("transfer_baselines"),
    script:
        "../scripts/transfer_baselines.py"


# Downstream fidelity on one dataset: every transfer SAE of (model, layer) spliced into the model at its
# layer, the remaining blocks run, and a probe fitted on the clean train split scored on the evaluation
# split (accuracy recovered against the layer's mean). A GPU job.
rule downstream:
    input:
        unpack(downstream_inputs),
    output:
        DOWNSTREAM,
    log:
        log("downstream", "{dataset}/{model}/layer{layer}"),
    benchmark:
        benchmark("downstream", "{dataset}/{model}/layer{layer}")
    conda:
        "../../envs/vitsae.yaml"
    threads: 2
    resources:
        gpu=1,
        cpus_per_gpu=2,
        mem_mb=scaled(32000),
        runtime=scaled(240),
    params:
        train_split=transfer_train_split(),
        eval_split=RUN.evaluation.split,
        settings=as_params(RUN.transfer),
        seed=RUN.seed,
        code=code("downstream"),
    script:
        "../scripts/downstream.py"


# Finding 3: every evaluation placed on its target's in-domain frontier (the gap at matched L0), with the
# baselines and the downstream accuracies; the figure draws the frontiers and the gaps.
rule transfer:
    input:
        evals=layout.transfer_evals(RUN),
        baselines=layout.baselines(RUN),
        downstream=layout.downstream(RUN),
    output:
        pdf=report(
            FIGURE.format(figure="transfer"),
            caption="../report/transfer.rst",
            category="Finding 3: transfer",
        ),
        csv=report(
            TABLE.format(table="transfer"),
            caption="../report/transfer_table.rst",
            category="Finding 3: transfer",
        ),
        matched=report(
            TABLE.format(table="transfer_matched"),
            caption="../report/transfer_table.rst",
            category="Finding 3: transfer",
        ),
        downstream=report(
            TABLE.format(table="transfer_downstream"),
            caption="../report/transfer_table.rst",
            category="Finding 3: transfer",
        ),
    log:
        log("transfer", "all"),
    benchmark:
        benchmark("transfer", "all")
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        title=FIGURES["transfer"],
        note=RUN.note,
        max_extrapolation=RUN.transfer.max_extrapolation,
        margin=RUN.transfer.gap_margin,
        code=code("transfer"),
    script:
        "../scripts/transfer.py"


# Per sweep: every SAE's training curves, and FVU against L0 of every SAE on its own dataset.
rule training_curves:
    input:
        unpack(sweep_logs),
    output:
        report(
            FIGURE.format(figure="training-{sweep}"),
            caption="../report/training.rst",
            category="SAE sweeps",
        ),
    log:
        log("training_curves", "{sweep}"),
    benchmark:
        benchmark("training_curves", "{sweep}")
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        title=lambda w: FIGURES[f"training-{w.sweep}"],
        note=RUN.note,
        code=code("training_curves"),
    script:
        "../scripts/training_curves.py"


rule pareto:
    input:
        pareto_inputs,
    output:
        pdf=report(
            FIGURE.format(figure="pareto-{sweep}"),
            caption="../report/pareto.rst",
            category="SAE sweeps",
        ),
        csv=report(
            TABLE.format(table="pareto-{sweep}"),
            caption="../report/pareto.rst",
            category="SAE sweeps",
        ),
    log:
        log("pareto", "{sweep}"),
    benchmark:
        benchmark("pareto", "{sweep}")
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        title=lambda w: FIGURES[f"pareto-{w.sweep}"],
        note=RUN.note,
        max_extrapolation=RUN.transfer.max_extrapolation,
        code=code("pareto"),
    script:
        "../scripts/pareto.py"


# Per sweep: every SAE checked on a sample of its own training data (stability across seeds, dead and
# dense features, whether the loss had flattened); failing SAEs are named, never dropped. A GPU job: the
# paper's sweep is 60 SAEs of 12,288 features, each encoding the sample.
rule quality:
    input:
        unpack(sweep_quality_inputs),
    output:
        pdf=report(
            FIGURE.format(figure="quality-{sweep}"),
            caption="../report/quality.rst",
            category="SAE sweeps",
        ),
        csv=report(
            TABLE.format(table="quality-{sweep}"),
            caption="../report/quality.rst",
            category="SAE sweeps",
        ),
    log:
        log("quality", "{sweep}"),
    benchmark:
        benchmark("quality", "{sweep}")
    conda:
        "../../envs/vitsae.yaml"
    threads: 2
    resources:
        gpu=1,
        cpus_per_gpu=2,
        mem_mb=scaled(16000),
        runtime=scaled(120),
    params:
        title=lambda w: FIGURES[f"quality-{w.sweep}"],
        note=RUN.note,
        settings=as_params(RUN.quality),
        dense_threshold=RUN.evaluation.dense_threshold,
        store_keys=sweep_store_keys,
        code=code("quality"),
    script:
        "../scripts/quality.py"
