# Manifest × model × layer → one Zarr activation store (all configured splits of the dataset).


rule extract:
    input:
        manifest="results/manifests/{dataset}.parquet",
        root=dataset_root_input,
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
        mem_mb=16000,
        runtime=600,
    params:
        dataset=dataset_settings,
        model=model_settings,
        splits=config["extraction"]["splits"],
        num_workers=config["extraction"]["num_workers"],
        code=source_digest(
            "vitsae.activations", "vitsae.models", "vitsae.store", "vitsae.manifest"
        ),
    script:
        "../scripts/extract.py"
