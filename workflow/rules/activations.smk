# Manifest × model × layer → one Zarr activation store (all configured splits of the dataset).
# extraction.parts: 1 (the demo): one extract job runs the model over every image.
# parts: N > 1: N extract_part jobs (one GPU each) write chunk-aligned image ranges of every split;
# extract then only joins them (hard links, no GPU) into the same store. A finished part is never redone.


rule extract_part:
    input:
        manifest="results/manifests/{dataset}.parquet",
    output:
        directory(
            "results/activations/{dataset}/{model}/layer{layer}.parts/part{part}-of{nparts}.zarr"
        ),
    log:
        "results/logs/extract_part/{dataset}/{model}/layer{layer}/part{part}-of{nparts}.log",
    benchmark:
        "results/benchmarks/extract_part/{dataset}/{model}/layer{layer}/part{part}-of{nparts}.tsv"
    wildcard_constraints:
        part=r"\d+",
        nparts=r"\d+",
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
        extraction=extraction_settings,
        splits=config["extraction"]["splits"],
        code=rule_digest("extract"),
    script:
        "../scripts/extract.py"


rule extract:
    input:
        unpack(extract_inputs),
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
        gpu=extract_gpus,
        cpus_per_gpu=4,
        mem_mb=scaled(16000),
        runtime=scaled(600),
    params:
        root=dataset_root,
        model=extraction_model_settings,
        extraction=extraction_settings,
        splits=config["extraction"]["splits"],
        parts=store_parts,
        code=rule_digest("extract"),
    script:
        "../scripts/extract.py"
