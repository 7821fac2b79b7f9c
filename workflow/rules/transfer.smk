# Features on the other dataset: each SAE of the findings read on every other dataset that has a concept
# table. Its statistics on that dataset's store (features split), labelled by that dataset's concept table
# (its manifest, format, thumbnails and rules), then compared feature by feature with the SAE's own table:
# alive on both or on one only, and the share of labels that survive the move, against a permutation null.
# One statistics job and one concept-table job per (dataset read, SAE's dataset, model, layer, sweep).


for _sweep in TRANSFER_LABEL_SWEEPS:

    rule:
        name:
            f"feature_stats_on_{_sweep.replace('-', '_')}"
        input:
            sae=feature_sae_files(_sweep, "sae.safetensors"),
            cfg=feature_sae_files(_sweep, "cfg.json"),
            store=fill(STORE, dataset="{eval_dataset}"),
            manifest=fill(MANIFEST, dataset="{eval_dataset}"),
        output:
            [directory(d) for d in feature_on_dirs(_sweep)],
        log:
            log("feature_stats_on", f"{{eval_dataset}}/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}"),
        benchmark:
            benchmark("feature_stats_on", f"{{eval_dataset}}/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}")
        conda:
            "../../envs/vitsae.yaml"
        threads: 2
        resources:
            gpu=1,
            cpus_per_gpu=2,
            mem_mb=scaled(32000),
            runtime=scaled(240),
        params:
            split=RUN.features.split,
            top_k=RUN.features.top_k,
            batch_tokens=RUN.features.batch_tokens,
            code=code("feature_stats"),
        script:
            "../scripts/feature_stats.py"

    rule:
        name:
            f"concepts_on_{_sweep.replace('-', '_')}"
        input:
            unpack(concept_on_inputs(_sweep)),
        output:
            table=fill(CONCEPTS_ON, sweep=_sweep),
            null=fill(CONCEPTS_ON_NULL, sweep=_sweep),
        log:
            log("concepts_on", f"{{eval_dataset}}/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}"),
        benchmark:
            benchmark("concepts_on", f"{{eval_dataset}}/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}")
        conda:
            "../../envs/vitsae.yaml"
        threads: 1
        resources:
            mem_mb=scaled(16000),
            runtime=scaled(120),
        params:
            format=eval_dataset_format,
            rules=eval_concept_rules,
            multilabels=eval_multilabels,
            seed=RUN.seed,
            code=code("concepts"),
        script:
            "../scripts/concepts.py"


# Do features keep their label on the other dataset? Per SAE and direction, and pooled over seeds.
rule transfer_labels:
    input:
        source=TRANSFER_LABEL_SOURCES,
        target=layout.concepts_on_tables(RUN),
    output:
        pdf=report(
            FIGURE.format(figure="transfer_labels"),
            caption="../report/transfer_labels.rst",
            category="Finding 3: transfer",
        ),
        csv=report(
            TABLE.format(table="transfer_labels"),
            caption="../report/transfer_labels.rst",
            category="Finding 3: transfer",
        ),
    log:
        log("transfer_labels", "all"),
    benchmark:
        benchmark("transfer_labels", "all")
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        targets=[e for e, *_ in TRANSFER_LABEL_KEYS],
        formats={d: ds.format for d, ds in RUN.datasets.items()},
        label_map=[list(pair) for pair in RUN.transfer.label_map],
        title=FIGURES["transfer_labels"],
        note=RUN.note,
        n_null=RUN.transfer.n_null,
        n_boot=RUN.n_boot,
        seed=RUN.seed,
        code=code("transfer_labels"),
    script:
        "../scripts/transfer_labels.py"
