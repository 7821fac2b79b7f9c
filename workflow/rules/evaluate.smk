# SAE × store (evaluation split) → reconstruction metrics, for its own dataset and every other one.


rule evaluate:
    input:
        sae="results/sae/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/sae.safetensors",
        cfg="results/sae/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/cfg.json",
        store="results/activations/{eval_dataset}/{model}/layer{layer}.zarr",
    output:
        "results/eval/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/{eval_dataset}.json",
    params:
        split=EVAL_SPLIT,
        dense_threshold=float(config["evaluation"]["dense_threshold"]),
        code=source_digest("vitsae.evaluate", "vitsae.sae", "vitsae.store"),
    log:
        "results/logs/evaluate/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/{eval_dataset}.log",
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/vitsae.yaml"
    script:
        "../scripts/evaluate.py"
