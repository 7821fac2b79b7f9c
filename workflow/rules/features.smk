# SAE features → statistics (one pass over the store per SAE) → concept tables in WordNet (ImageNet)
# and in the iNat taxonomy → findings 1 and 2, feature cards, feature-level transfer. Which SAEs: the
# selector features.saes (default every SAE). One job per (dataset, model, layer, sweep) handles all
# selected SAEs of the sweep; per-feature work is vectorised inside it, never one job per feature.


# Per dataset and split: a 4x4 RGB thumbnail of every image and descriptors of the cells of its centre
# square, visual descriptors from neither model (the concept tables' visual diversity of whole images
# and of the regions where a feature fires, with their null models).
rule thumbnails:
    input:
        manifest=MANIFEST,
        images=dataset_files,
    output:
        THUMBNAILS,
    log:
        log("thumbnails", "{dataset}/{split}"),
    benchmark:
        benchmark("thumbnails", "{dataset}/{split}")
    conda:
        "../../envs/vitsae.yaml"
    threads: 1
    resources:
        mem_mb=scaled(8000),
        runtime=scaled(240),
    params:
        root=dataset_root,
        size=RUN.concepts.thumbnail_size,
        cells=RUN.concepts.region_cells,
        code=code("thumbnails"),
    script:
        "../scripts/thumbnails.py"


for _sweep in FEATURE_SAES:

    rule:
        name:
            f"feature_stats_{_sweep.replace('-', '_')}"
        input:
            sae=feature_sae_files(_sweep, "sae.safetensors"),
            cfg=feature_sae_files(_sweep, "cfg.json"),
            store=STORE,
            manifest=MANIFEST,
        output:
            [directory(d) for d in feature_dirs(_sweep)],
        log:
            log("feature_stats", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}"),
        benchmark:
            benchmark("feature_stats", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}")
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
            f"concepts_{_sweep.replace('-', '_')}"
        input:
            unpack(concept_inputs(_sweep)),
        output:
            table=report(
                fill(CONCEPTS, sweep=_sweep),
                caption="../report/concepts.rst",
                category="Concepts",
            ),
            null=fill(CONCEPTS_NULL, sweep=_sweep),
        log:
            log("concepts", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}"),
        benchmark:
            benchmark("concepts", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}")
        conda:
            "../../envs/vitsae.yaml"
        threads: 1
        resources:
            mem_mb=scaled(16000),
            runtime=scaled(120),
        params:
            format=dataset_format,
            rules=concept_rules,
            multilabels=multilabels,
            seed=RUN.seed,
            code=code("concepts"),
        script:
            "../scripts/concepts.py"

    # Feature clusters ("concepts"): features with near-equal decoder rows or top-image sets are one
    # concept, so that one concept split over many features is not counted many times (claims).
    rule:
        name:
            f"clusters_{_sweep.replace('-', '_')}"
        input:
            stats=feature_dirs(_sweep),
            sae=feature_sae_files(_sweep, "sae.safetensors"),
        output:
            fill(CLUSTERS, sweep=_sweep),
        log:
            log("clusters", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}"),
        benchmark:
            benchmark("clusters", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}")
        conda:
            "../../envs/vitsae.yaml"
        threads: 1
        resources:
            mem_mb=scaled(16000),
            runtime=scaled(60),
        params:
            decoder_cosine=RUN.claims.decoder_cosine,
            top_image_jaccard=RUN.claims.top_image_jaccard,
            code=code("clusters"),
        script:
            "../scripts/clusters.py"

    # The strongest features of each label as cards: top images with the patch map overlaid.
    rule:
        name:
            f"cards_{_sweep.replace('-', '_')}"
        input:
            stats=feature_dirs(_sweep),
            table=fill(CONCEPTS, sweep=_sweep),
            manifest=MANIFEST,
            store=STORE,
            images=dataset_files,
        output:
            directory(fill(CARDS, sweep=_sweep)),
        log:
            log("cards", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}"),
        benchmark:
            benchmark("cards", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}")
        conda:
            "../../envs/vitsae.yaml"
        threads: 1
        resources:
            mem_mb=scaled(8000),
            runtime=scaled(60),
        params:
            root=dataset_root,
            per_label=RUN.cards.per_label,
            n_images=RUN.cards.n_images,
            code=code("cards"),
        script:
            "../scripts/cards.py"


# The shuffled-labels control: the same concept tables with the manifest's labels permuted among the
# split's images (controls.shuffled_labels names the sweeps). No label share may exceed its null.
for _sweep in RUN.shuffled_labels:

    rule:
        name:
            f"concepts_shuffled_{_sweep.replace('-', '_')}"
        input:
            unpack(concept_inputs(_sweep)),
        output:
            table=fill(CONCEPTS_SHUFFLED, sweep=_sweep),
            null=fill(CONCEPTS_SHUFFLED_NULL, sweep=_sweep),
        log:
            log("concepts_shuffled", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}"),
        benchmark:
            benchmark("concepts_shuffled", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}")
        conda:
            "../../envs/vitsae.yaml"
        threads: 1
        resources:
            mem_mb=scaled(16000),
            runtime=scaled(120),
        params:
            format=dataset_format,
            rules=concept_rules,
            multilabels=multilabels,
            seed=RUN.seed,
            shuffle_seed=RUN.seed,
            code=code("concepts"),
        script:
            "../scripts/concepts.py"


# Findings 1 and 2 from every concept table: label shares with bootstrap CIs beside the null model,
# robustness over every SAE and layer, and the headline statistic against L0 and FVU.
rule findings:
    input:
        tables=layout.concept_tables(RUN, findings=True),
        nulls=layout.concept_tables(RUN, null=True, findings=True),
        evals=[EVAL.format(**k, eval_dataset=k["dataset"]) for k in FINDING_KEYS],
        cfgs=[f"{SAE_DIR.format(**k)}/cfg.json" for k in FINDING_KEYS],
    output:
        abstraction_pdf=report(
            FIGURE.format(figure="semantic_abstraction"),
            caption="../report/findings.rst",
            category="Finding 1: abstraction",
        ),
        abstraction_csv=report(
            TABLE.format(table="semantic_abstraction"),
            caption="../report/findings.rst",
            category="Finding 1: abstraction",
        ),
        abstraction_shares=TABLE.format(table="semantic_abstraction_shares"),
        abstraction_branch_pairs=TABLE.format(table="semantic_abstraction_branch_pairs"),
        traits_pdf=report(
            FIGURE.format(figure="traits"),
            caption="../report/findings.rst",
            category="Finding 2: traits",
        ),
        traits_csv=report(
            TABLE.format(table="traits"),
            caption="../report/findings.rst",
            category="Finding 2: traits",
        ),
        traits_shares=TABLE.format(table="traits_shares"),
    log:
        log("findings", "all"),
    benchmark:
        benchmark("findings", "all")
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        formats=[RUN.datasets[d].format for d, _m, _l, _s in layout.finding_keys(RUN)],
        titles={k: FIGURES[k] for k in ("semantic_abstraction", "traits")},
        n_boot=RUN.n_boot,
        note=RUN.note,
        seed=RUN.seed,
        code=code("findings"),
    script:
        "../scripts/findings.py"


# Finding 3 at the feature level: decoder directions matched across datasets, against seeds and chance.
rule transfer_features:
    input:
        sae=[f"{SAE_DIR.format(**k)}/sae.safetensors" for k in FINDING_KEYS],
        cfg=[f"{SAE_DIR.format(**k)}/cfg.json" for k in FINDING_KEYS],
        stats=[FEATURES.format(**k) for k in FINDING_KEYS],
        stores=sorted(
            {STORE.format(dataset=k["dataset"], model=k["model"], layer=k["layer"]) for k in FINDING_KEYS}
        ),
    output:
        pdf=report(
            FIGURE.format(figure="transfer_features"),
            caption="../report/transfer_features.rst",
            category="Finding 3: transfer",
        ),
        csv=report(
            TABLE.format(table="transfer_features"),
            caption="../report/transfer_features.rst",
            category="Finding 3: transfer",
        ),
    log:
        log("transfer_features", "all"),
    benchmark:
        benchmark("transfer_features", "all")
    conda:
        "../../envs/vitsae.yaml"
    threads: 1
    resources:
        mem_mb=scaled(16000),
        runtime=scaled(120),
    params:
        title=FIGURES["transfer_features"],
        note=RUN.note,
        seed=RUN.seed,
        floor_draws=RUN.transfer.floor_draws,
        code=code("transfer_features"),
    script:
        "../scripts/transfer_features.py"
