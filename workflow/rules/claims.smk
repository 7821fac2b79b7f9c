# Findings 1 and 2 tested (README, "How the claims are tested"): the declared comparisons at matched
# L0 with hierarchical-bootstrap CIs and permutation tests, the specification curve over the labelling
# thresholds, and the negative controls. Everything is read from files the DAG already writes.


# The specification curve: every cell of claims.spec_grid relabels the saved tables (no store read).
rule spec_curve:
    input:
        **claim_inputs(),
    output:
        csv=report(
            TABLE.format(table="spec_curve"),
            caption="../report/spec_curve.rst",
            category="Claims",
        ),
        pdf=report(
            FIGURE.format(figure="spec_curve"),
            caption="../report/spec_curve.rst",
            category="Claims",
        ),
    log:
        log("spec_curve", "all"),
    benchmark:
        benchmark("spec_curve", "all")
    conda:
        "../../envs/vitsae.yaml"
    threads: 1
    resources:
        mem_mb=scaled(16000),
        runtime=scaled(120),
    params:
        formats={d: ds.format for d, ds in RUN.datasets.items()},
        claims=as_params(RUN.claims),
        rules={
            k: as_params(RUN.concepts.rules(f)) for f, k in (("imagenet", "imagenet"), ("inat2021", "inat"))
        },
        title=FIGURES["spec_curve"],
        note=RUN.note,
        seed=RUN.seed,
        code=code("spec_curve"),
    script:
        "../scripts/spec_curve.py"


# The claims table and figure: one row per declared comparison with its verdict. Its params leave out
# the threshold grid (an edited grid reaches it through the specification curve's table).
rule claims:
    input:
        **claim_inputs(),
        spec=TABLE.format(table="spec_curve"),
        quality=[TABLE.format(table=f"quality-{s}") for s in RUN.claims.sweeps],
        transfer=TABLE.format(table="transfer"),
        transfer_matched=TABLE.format(table="transfer_matched"),
        transfer_downstream=TABLE.format(table="transfer_downstream"),
        ratings=RATINGS,
    output:
        csv=report(
            TABLE.format(table="claims"),
            caption="../report/claims.rst",
            category="Claims",
        ),
        pdf=report(
            FIGURE.format(figure="claims"),
            caption="../report/claims.rst",
            category="Claims",
        ),
    log:
        log("claims", "all"),
    benchmark:
        benchmark("claims", "all")
    conda:
        "../../envs/vitsae.yaml"
    threads: 1
    resources:
        mem_mb=scaled(16000),
        runtime=scaled(120),
    params:
        claims={k: v for k, v in as_params(RUN.claims).items() if k != "spec_grid"},
        transfer={
            "formats": {d: ds.format for d, ds in RUN.datasets.items()},
            "margin": RUN.transfer.gap_margin,
            "min_accuracy": RUN.transfer.min_accuracy_recovered,
        },
        title=FIGURES["claims"],
        note=RUN.note,
        seed=RUN.seed,
        code=code("claims"),
    script:
        "../scripts/claims.py"


# The negative controls beside the observed tables: each label's share against its null, paired by
# feature; the shuffled-labels and permuted-dims tables must not exceed theirs.
rule controls:
    input:
        tables=layout.concept_tables(RUN),
        nulls=layout.concept_tables(RUN, null=True),
        shuffled=layout.shuffled_tables(RUN),
        shuffled_nulls=layout.shuffled_tables(RUN, null=True),
    output:
        report(
            TABLE.format(table="controls"),
            caption="../report/controls.rst",
            category="Claims",
        ),
    log:
        log("controls", "all"),
    benchmark:
        benchmark("controls", "all")
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        null_sweep=RUN.claims.null_sweep,
        alpha=RUN.claims.alpha,
        code=code("controls"),
    script:
        "../scripts/controls.py"
