# Evaluation results → the paper's transfer table and figure (finding 3).


rule transfer:
    input:
        eval_jsons(),
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
