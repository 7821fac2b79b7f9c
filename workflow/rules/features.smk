# SAE features → statistics (one pass over the store per SAE) → concept tables in WordNet (ImageNet)
# and in the iNat taxonomy. Which SAEs: the selector features.saes (default every SAE). One job per
# (dataset, model, layer, sweep) handles all selected SAEs of the sweep; per-feature work is
# vectorised inside it, never one job per feature.


# Per dataset and split: a 4x4 RGB thumbnail of every image, a visual descriptor from neither model
# (the concept tables' visual-diversity statistic and its null model).
rule thumbnails:
    input:
        manifest="results/manifests/{dataset}.parquet",
        images=dataset_files,
    output:
        "results/thumbnails/{dataset}/{split}.npz",
    log:
        "results/logs/thumbnails/{dataset}/{split}.log",
    benchmark:
        "results/benchmarks/thumbnails/{dataset}/{split}.tsv"
    conda:
        "../../envs/vitsae.yaml"
    threads: 1
    resources:
        mem_mb=scaled(8000),
        runtime=scaled(240),
    params:
        root=dataset_root,
        size=config["concepts"]["thumbnail_size"],
        code=rule_digest("thumbnails"),
    script:
        "../scripts/thumbnails.py"


for _sweep, _ids in FEATURE_SAES.items():

    rule:
        name:
            f"feature_stats_{_sweep.replace('-', '_')}"
        input:
            sae=feature_inputs(_sweep, _ids, "sae.safetensors"),
            cfg=feature_inputs(_sweep, _ids, "cfg.json"),
            store="results/activations/{dataset}/{model}/layer{layer}.zarr",
            manifest="results/manifests/{dataset}.parquet",
        output:
            [directory(d) for d in feature_dirs_pattern(_sweep, _ids)],
        log:
            f"results/logs/feature_stats/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}.log",
        benchmark:
            f"results/benchmarks/feature_stats/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}.tsv"
        conda:
            "../../envs/vitsae.yaml"
        threads: 2
        resources:
            gpu=1,
            cpus_per_gpu=2,
            mem_mb=scaled(32000),
            runtime=scaled(240),
        params:
            split=config["features"]["split"],
            top_k=config["features"]["top_k"],
            batch_tokens=config["features"]["batch_tokens"],
            code=rule_digest("feature_stats"),
        script:
            "../scripts/feature_stats.py"

    rule:
        name:
            f"concepts_{_sweep.replace('-', '_')}"
        input:
            unpack(concept_inputs(_sweep, _ids)),
        output:
            table=report(
                f"results/tables/concepts/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}.csv",
                caption="../report/concepts.rst",
                category="Concepts",
            ),
            null=f"results/tables/concepts/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}.null.csv",
        log:
            f"results/logs/concepts/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}.log",
        benchmark:
            f"results/benchmarks/concepts/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}.tsv"
        conda:
            "../../envs/vitsae.yaml"
        threads: 1
        resources:
            mem_mb=scaled(16000),
            runtime=scaled(120),
        params:
            sweep=_sweep,
            format=lambda w: config["datasets"][w.dataset]["format"],
            rules=concept_rules,
            code=rule_digest("concepts"),
        script:
            "../scripts/concepts.py"

    # The strongest features of each label as cards: top images with the patch map overlaid.
    rule:
        name:
            f"cards_{_sweep.replace('-', '_')}"
        input:
            stats=feature_dirs_pattern(_sweep, _ids),
            table=f"results/tables/concepts/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}.csv",
            manifest="results/manifests/{dataset}.parquet",
            store="results/activations/{dataset}/{model}/layer{layer}.zarr",
            images=dataset_files,
        output:
            directory(
                f"results/figures/features/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}"
            ),
        log:
            f"results/logs/cards/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}.log",
        benchmark:
            f"results/benchmarks/cards/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}.tsv"
        conda:
            "../../envs/vitsae.yaml"
        threads: 1
        resources:
            mem_mb=scaled(8000),
            runtime=scaled(60),
        params:
            root=dataset_root,
            sweep=_sweep,
            per_label=config["cards"]["per_label"],
            n_images=config["cards"]["n_images"],
            code=rule_digest("cards"),
        script:
            "../scripts/cards.py"


# Findings 1 and 2 from every concept table: label shares with bootstrap CIs beside the null model,
# robustness over every SAE and layer, and the headline statistic against L0 and FVU.
rule findings:
    input:
        tables=concept_tables(),
        nulls=concept_tables(null=True),
        evals=feature_eval_jsons(),
        cfgs=[f"{d}/cfg.json" for d in feature_sae_dirs()],
    output:
        abstraction_pdf=report(
            "results/figures/semantic_abstraction.pdf",
            caption="../report/findings.rst",
            category="Finding 1: abstraction",
        ),
        abstraction_csv=report(
            "results/tables/semantic_abstraction.csv",
            caption="../report/findings.rst",
            category="Finding 1: abstraction",
        ),
        abstraction_shares="results/tables/semantic_abstraction_shares.csv",
        traits_pdf=report(
            "results/figures/traits.pdf",
            caption="../report/findings.rst",
            category="Finding 2: traits",
        ),
        traits_csv=report(
            "results/tables/traits.csv",
            caption="../report/findings.rst",
            category="Finding 2: traits",
        ),
        traits_shares="results/tables/traits_shares.csv",
    log:
        "results/logs/findings.log",
    benchmark:
        "results/benchmarks/findings.tsv"
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        formats=[config["datasets"][d]["format"] for d, _m, _l, _s in concept_keys()],
        n_boot=config["findings"]["n_boot"],
        note=figure_note(),
        code=rule_digest("findings"),
    script:
        "../scripts/findings.py"


# Finding 3 at the feature level: decoder directions matched across datasets, against seeds and chance.
rule transfer_features:
    input:
        sae=[f"{d}/sae.safetensors" for d in feature_sae_dirs()],
        stats=[
            d.replace("results/sae/", "results/features/", 1)
            for d in feature_sae_dirs()
        ],
    output:
        pdf=report(
            "results/figures/transfer_features.pdf",
            caption="../report/transfer_features.rst",
            category="Finding 3: transfer",
        ),
        csv=report(
            "results/tables/transfer_features.csv",
            caption="../report/transfer_features.rst",
            category="Finding 3: transfer",
        ),
    log:
        "results/logs/transfer_features.log",
    benchmark:
        "results/benchmarks/transfer_features.tsv"
    conda:
        "../../envs/vitsae.yaml"
    threads: 1
    resources:
        mem_mb=scaled(16000),
        runtime=scaled(120),
    params:
        note=figure_note(),
        code=rule_digest("transfer_features"),
    script:
        "../scripts/transfer_features.py"
