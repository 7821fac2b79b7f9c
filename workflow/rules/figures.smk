# Evaluation results → the paper's transfer table and figure (finding 3).


rule transfer:
    input:
        eval_jsons(TRANSFER_SAES),
    output:
        pdf=report(
            "results/figures/transfer.pdf",
            caption="../report/transfer.rst",
            category="Finding 3: transfer",
        ),
        csv=report(
            "results/tables/transfer.csv",
            caption="../report/transfer_table.rst",
            category="Finding 3: transfer",
        ),
    log:
        "results/logs/transfer.log",
    benchmark:
        "results/benchmarks/transfer.tsv"
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        title=FIGURES["transfer"],
        note=figure_note(),
        code=rule_digest("transfer"),
    script:
        "../scripts/transfer.py"


# Per sweep: every SAE's training curves, and FVU against L0 of every SAE on its own dataset.
rule training_curves:
    input:
        lambda w: [f"{d}/train_log.csv" for d in sae_dirs([w.sweep])],
    output:
        report(
            "results/figures/training-{sweep}.pdf",
            caption="../report/training.rst",
            category="SAE sweeps",
        ),
    log:
        "results/logs/training_curves/{sweep}.log",
    benchmark:
        "results/benchmarks/training_curves/{sweep}.tsv"
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        title=lambda w: FIGURES[f"training-{w.sweep}"],
        note=figure_note(),
        code=rule_digest("sweep_figures"),
    script:
        "../scripts/training_curves.py"


rule pareto:
    input:
        lambda w: [
            f"{d.replace('results/sae/', 'results/eval/', 1)}/{d.split('/')[2]}.json"
            for d in sae_dirs([w.sweep])
        ],
    output:
        pdf=report(
            "results/figures/pareto-{sweep}.pdf",
            caption="../report/pareto.rst",
            category="SAE sweeps",
        ),
        csv=report(
            "results/tables/pareto-{sweep}.csv",
            caption="../report/pareto.rst",
            category="SAE sweeps",
        ),
    log:
        "results/logs/pareto/{sweep}.log",
    benchmark:
        "results/benchmarks/pareto/{sweep}.tsv"
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        title=lambda w: FIGURES[f"pareto-{w.sweep}"],
        note=figure_note(),
        code=rule_digest("sweep_figures"),
    script:
        "../scripts/pareto.py"


# Provenance a reviewer can open: the figure's full upstream graph as one page and as JSON.
rule lineage:
    input:
        "results/figures/{figure}.pdf",
    output:
        html=report(
            "results/provenance/{figure}.html",
            caption="../report/lineage.rst",
            category="Provenance",
        ),
        json="results/provenance/{figure}.json",
    log:
        "results/logs/lineage/{figure}.log",
    benchmark:
        "results/benchmarks/lineage/{figure}.tsv"
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        title=lambda wildcards: FIGURES[wildcards.figure],
        code=rule_digest("lineage"),
    script:
        "../scripts/lineage.py"


# The run as a Workflow Run RO-Crate: workflow, parameters, inputs and every output.
rule ro_crate:
    input:
        finals=[
            *expand("results/figures/{figure}.pdf", figure=FIGURES),
            "results/tables/transfer.csv",
            *expand("results/tables/pareto-{sweep}.csv", sweep=SWEEPS),
            *expand(
                "results/tables/{name}.csv",
                name=[
                    "semantic_abstraction",
                    "semantic_abstraction_shares",
                    "traits",
                    "traits_shares",
                    "transfer_features",
                ],
            ),
        ],
        artifacts=run_artifacts(),
        pages=expand(
            "results/provenance/{figure}.{ext}", figure=FIGURES, ext=["html", "json"]
        ),
    output:
        directory("results/provenance/ro-crate"),
    log:
        "results/logs/ro_crate.log",
    benchmark:
        "results/benchmarks/ro_crate.tsv"
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        # The crate holds the resolved config: any change to it remakes the crate.
        config_digest=config_digest(),
        code=rule_digest("ro_crate"),
    script:
        "../scripts/ro_crate.py"
