# Activation store (training split) → every SAE of a sweep, trained in one pass over the data
# (vitsae.sweep): one job per (dataset, model, layer, sweep), one directory per SAE holding
# sae.safetensors + cfg.json + train_log.csv. A sweep's grid is fixed by the config, so each sweep
# gets its own rule (train_sae_<sweep>) whose outputs name every SAE of the grid.
# Training state for exact resume lives under results/.state/, outside the declared outputs, so a
# killed or preempted job's rerun continues where the last checkpoint left off.

for _sweep in SWEEPS:

    rule:
        name:
            f"train_sae_{_sweep.replace('-', '_')}"
        input:
            store="results/activations/{dataset}/{model}/layer{layer}.zarr",
        output:
            sae=sweep_files(_sweep, "sae.safetensors"),
            cfg=sweep_files(_sweep, "cfg.json"),
            log_csv=sweep_files(_sweep, "train_log.csv"),
        log:
            f"results/logs/train_sae/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}.log",
        benchmark:
            f"results/benchmarks/train_sae/{{dataset}}/{{model}}/layer{{layer}}/{_sweep}.tsv"
        conda:
            "../../envs/vitsae.yaml"
        threads: 2
        resources:
            gpu=1,
            cpus_per_gpu=2,
            mem_mb=scaled(16000),
            runtime=scaled(720),
        params:
            sweep=_sweep,
            settings=sweep_params(_sweep),
            state_dir=lambda w, s=_sweep: f"results/.state/sae/{w.dataset}/{w.model}/layer{w.layer}/{s}",
            code=rule_digest("train_sae"),
        script:
            "../scripts/train_sae.py"
