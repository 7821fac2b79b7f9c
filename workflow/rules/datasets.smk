# Datasets → manifests. The demo datasets are drawn by a rule from a seed; real datasets are paths.


rule demo_dataset:
    output:
        directory("results/datasets/{dataset}"),
    params:
        dataset=dataset_settings,
        code=source_digest("vitsae.demo"),
    log:
        "results/logs/demo_dataset/{dataset}.log",
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    script:
        "../scripts/demo_dataset.py"


rule manifest:
    input:
        dataset_root_input,
    output:
        "results/manifests/{dataset}.parquet",
    params:
        dataset=dataset_settings,
        seed=config["seed"],
        code=source_digest("vitsae.manifest"),
    log:
        "results/logs/manifest/{dataset}.log",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/vitsae.yaml"
    script:
        "../scripts/manifest.py"
