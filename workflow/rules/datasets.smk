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
            log("demo_dataset", _name),
        benchmark:
            benchmark("demo_dataset", _name)
        localrule: True
        conda:
            "../../envs/vitsae.yaml"
        params:
            generate=as_params(RUN.datasets[_name].generate),
            code=code("demo_dataset"),
        script:
            "../scripts/demo_dataset.py"


rule manifest:
    input:
        dataset_files,
    output:
        MANIFEST,
    log:
        log("manifest", "{dataset}"),
    benchmark:
        benchmark("manifest", "{dataset}")
    conda:
        "../../envs/vitsae.yaml"
    threads: 2
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(60),
    params:
        dataset=manifest_settings,
        seed=RUN.seed,
        code=code("manifest"),
    script:
        "../scripts/manifest.py"
