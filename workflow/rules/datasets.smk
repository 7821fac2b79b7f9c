# Datasets → manifests. The demo datasets are drawn by a rule from a seed; real datasets are paths.


rule demo_dataset:
    output:
        directory("results/datasets/{dataset}"),
    log:
        "results/logs/demo_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/demo_dataset/{dataset}.tsv"
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        dataset=dataset_settings,
        code=source_digest("vitsae.demo"),
    script:
        "../scripts/demo_dataset.py"


rule manifest:
    input:
        dataset_root_input,
    output:
        "results/manifests/{dataset}.parquet",
    log:
        "results/logs/manifest/{dataset}.log",
    benchmark:
        "results/benchmarks/manifest/{dataset}.tsv"
    conda:
        "../../envs/vitsae.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        dataset=dataset_settings,
        seed=config["seed"],
        code=source_digest("vitsae.manifest"),
    script:
        "../scripts/manifest.py"
