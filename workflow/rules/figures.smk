# Evaluations and training logs → the transfer table and figure (finding 3) and, per sweep, the
# training curves, the sparsity–reconstruction (Pareto) plot and the SAEs' quality checks.


rule transfer:
    input:
        layout.evals(RUN, RUN.transfer_saes),
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
        sweep_evals,
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
