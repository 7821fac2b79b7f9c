# Provenance a reviewer can open: each figure's full upstream graph as one page and as JSON, and the
# run as a Workflow Run RO-Crate (workflow, parameters, inputs and every output).


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
        pages=[p.format(figure=f) for f in FIGURES for p in (LINEAGE_HTML, LINEAGE_JSON)],
    output:
        directory(CRATE),
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
        code=code("ro_crate"),
    script:
        "../scripts/ro_crate.py"
