# Manifest × model × layer → one Zarr activation store (all configured splits of the dataset).
# extraction.parts: 1 (the demo): one extract job runs the model over every image.
# parts: N > 1: N extract_part jobs (one GPU each) write chunk-aligned image ranges of every split;
# extract then only joins them (hard links, no GPU) into the same store. A finished part is never redone.


rule extract_part:
    input:
        manifest=MANIFEST,
    output:
        directory(STORE_PART),
    log:
        log("extract_part", "{dataset}/{model}/layer{layer}/part{part}-of{nparts}"),
    benchmark:
        benchmark("extract_part", "{dataset}/{model}/layer{layer}/part{part}-of{nparts}")
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
        model=model_spec,
        batch_size=model_batch,
        extraction=extraction_settings,
        splits=list(RUN.extraction.splits),
        num_workers=RUN.extraction.num_workers,
        code=code("extract"),
    script:
        "../scripts/extract.py"


rule extract:
    input:
        unpack(extract_inputs),
    output:
        directory(STORE),
    log:
        log("extract", "{dataset}/{model}/layer{layer}"),
    benchmark:
        benchmark("extract", "{dataset}/{model}/layer{layer}")
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
        model=model_spec,
        batch_size=model_batch,
        extraction=extraction_settings,
        splits=list(RUN.extraction.splits),
        num_workers=RUN.extraction.num_workers,
        parts=store_parts,
        code=code("extract"),
    script:
        "../scripts/extract.py"
