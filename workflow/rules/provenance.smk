# Provenance a reviewer can open: each figure's full upstream graph as one page and as JSON, and the
# run as a Workflow Run and Provenance Run RO-Crate rooted at results/ (workflow, parameters, inputs,
# one action per job, every output described in place).


rule lineage:
    input:
        FIGURE,
    output:
        html=report(
            LINEAGE_HTML,
            caption="../report/lineage.rst",
            category="Provenance",
        ),
        json=LINEAGE_JSON,
    log:
        log("lineage", "{figure}"),
    benchmark:
        benchmark("lineage", "{figure}")
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        title=lambda wildcards: FIGURES[wildcards.figure],
        code=code("lineage"),
    script:
        "../scripts/lineage.py"


rule ro_crate:
    input:
        finals=[
            *(FIGURE.format(figure=f) for f in FIGURES),
            *layout.final_tables(RUN),
        ],
        artifacts=layout.run_artifacts(RUN),
        pages=[p.format(figure=f) for f in [*FIGURES, "browser"] for p in (LINEAGE_HTML, LINEAGE_JSON)],
    output:
        # The crate's root is results/: its metadata file sits there and describes every artifact in
        # place; CRATE holds the copies of what lives outside results/ (workflow, resolved config).
        copies=directory(CRATE),
        metadata=CRATE_METADATA,
    log:
        log("ro_crate", "all"),
    benchmark:
        benchmark("ro_crate", "all")
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        # The crate holds the resolved config: any change to it remakes the crate.
        config_digest=RUN.digest(),
        rule_sources=rule_sources,
        code=code("ro_crate"),
    script:
        "../scripts/ro_crate.py"
