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
    params:
        note=figure_note(),
        code=source_digest("vitsae.transfer"),
    log:
        "results/logs/transfer.log",
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    script:
        "../scripts/transfer.py"
