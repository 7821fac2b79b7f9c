# SAE × store (evaluation split) → reconstruction metrics, for its own dataset and every other one.


rule evaluate:
    input:
        sae="results/sae/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/sae.safetensors",
        cfg="results/sae/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/cfg.json",
        store="results/activations/{eval_dataset}/{model}/layer{layer}.zarr",
    output:
        "results/eval/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/{eval_dataset}.json",
    log:
        "results/logs/evaluate/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/{eval_dataset}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/{eval_dataset}.tsv"
    conda:
        "../../envs/vitsae.yaml"
    threads: 1
    resources:
        gpu=1,
        cpus_per_gpu=1,
        mem_mb=scaled(8000),
        runtime=scaled(120),
    params:
        split=EVAL_SPLIT,
        dense_threshold=float(config["evaluation"]["dense_threshold"]),
        code=rule_digest("evaluate"),
    script:
        "../scripts/evaluate.py"
