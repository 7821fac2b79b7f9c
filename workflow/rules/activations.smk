# Manifest × model × layer → one Zarr activation store (all configured splits of the dataset).


rule extract:
    input:
        manifest="results/manifests/{dataset}.parquet",
    output:
        directory("results/activations/{dataset}/{model}/layer{layer}.zarr"),
    log:
        "results/logs/extract/{dataset}/{model}/layer{layer}.log",
    benchmark:
        "results/benchmarks/extract/{dataset}/{model}/layer{layer}.tsv"
    conda:
        "../../envs/vitsae.yaml"
    threads: 2
    resources:
        gpu=1,
        cpus_per_gpu=4,
        mem_mb=scaled(16000),
        runtime=scaled(600),
    params:
        root=dataset_root,
        model=extraction_model_settings,
        splits=config["extraction"]["splits"],
        code=rule_digest("extract"),
    script:
        "../scripts/extract.py"
