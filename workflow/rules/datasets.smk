# Datasets → manifests. The demo datasets are drawn by a rule from a seed; real datasets are paths.
# Every file of a demo dataset is a declared output, so editing one image reruns its manifest
# and everything downstream of that dataset (and nothing of the other datasets).

for _name in GENERATED:

    rule:
        name:
            f"demo_dataset_{_name.replace('-', '_')}"
        output:
            demo_outputs(_name),
        log:
            f"results/logs/demo_dataset/{_name}.log",
        benchmark:
            f"results/benchmarks/demo_dataset/{_name}.tsv"
        localrule: True
        conda:
            "../../envs/vitsae.yaml"
        params:
            generate=config["datasets"][_name]["generate"],
            code=rule_digest("demo_dataset"),
        script:
            "../scripts/demo_dataset.py"


rule manifest:
    input:
        dataset_files,
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
        mem_mb=scaled(4000),
        runtime=scaled(60),
    params:
        dataset=manifest_settings,
        seed=config["seed"],
        code=rule_digest("manifest"),
    script:
        "../scripts/manifest.py"
