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
        note=figure_note(),
        code=rule_digest("transfer"),
    script:
        "../scripts/transfer.py"
