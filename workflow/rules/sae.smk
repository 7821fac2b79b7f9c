# Activation store (training split) → one SAE per sweep: sae.safetensors + cfg.json + training log.


rule train_sae:
    input:
        store="results/activations/{dataset}/{model}/layer{layer}.zarr",
    output:
        sae="results/sae/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/sae.safetensors",
        cfg="results/sae/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/cfg.json",
        log_csv="results/sae/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}/train_log.csv",
    log:
        "results/logs/train_sae/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}.log",
    benchmark:
        "results/benchmarks/train_sae/{dataset}/{model}/layer{layer}/{sweep}/{sae_id}.tsv"
    conda:
        "../../envs/vitsae.yaml"
    threads: 2
    resources:
        gpu=1,
        cpus_per_gpu=2,
        mem_mb=scaled(16000),
        runtime=scaled(720),
    params:
        sweep=sweep_settings,
        code=rule_digest("train_sae"),
    script:
        "../scripts/train_sae.py"
