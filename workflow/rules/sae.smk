# Activation store (training split) → every SAE of a sweep, trained in one pass over the data
# (vitsae.sae.train): one job per (dataset, model, layer, sweep), one directory per SAE holding
# sae.safetensors + cfg.json + train_log.csv. A sweep's grid is fixed by the config, so each sweep
# gets its own rule (train_sae_<sweep>) whose outputs name every SAE of the grid.
# Training state for exact resume lives under results/.state/, outside the declared outputs, so a
# killed or preempted job's rerun continues where the last checkpoint left off.


for _sweep in SWEEPS:

    rule:
        name:
            f"train_sae_{_sweep.replace('-', '_')}"
        input:
            store=STORE,
        output:
            sae=sweep_outputs(_sweep, "sae.safetensors"),
            cfg=sweep_outputs(_sweep, "cfg.json"),
            log_csv=sweep_outputs(_sweep, "train_log.csv"),
        log:
            log("train_sae", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}"),
        benchmark:
            benchmark("train_sae", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}")
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
            state_dir=lambda w, s=_sweep: TRAIN_STATE.format(**w, sweep=s),
            code=code("train_sae"),
        script:
            "../scripts/train_sae.py"


# A sweep's SAEs × store (evaluation split) → reconstruction metrics, for their own dataset and every
# other one: one job per training job and evaluated store, reading the store once for all of them
# (vitsae.sae.evaluate.evaluate_many); each SAE's metrics in its own file, with its own record.
for _sweep in SWEEPS:

    rule:
        name:
            f"evaluate_{_sweep.replace('-', '_')}"
        input:
            sae=sweep_outputs(_sweep, "sae.safetensors"),
            cfg=sweep_outputs(_sweep, "cfg.json"),
            store=fill(STORE, dataset="{eval_dataset}"),
        output:
            [fill(EVAL, sweep=_sweep, sae_id=i) for i in RUN.sweeps[_sweep].ids],
        log:
            log("evaluate", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}/{{eval_dataset}}"),
        benchmark:
            benchmark("evaluate", f"{{dataset}}/{{model}}/layer{{layer}}/{_sweep}/{{eval_dataset}}")
        conda:
            "../../envs/vitsae.yaml"
        threads: 1
        resources:
            gpu=1,
            cpus_per_gpu=1,
            mem_mb=scaled(8000),
            runtime=scaled(120),
        params:
            split=RUN.evaluation.split,
            dense_threshold=RUN.evaluation.dense_threshold,
            code=code("evaluate"),
        script:
            "../scripts/evaluate.py"
