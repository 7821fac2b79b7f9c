"""Rule evaluate: reconstruction metrics of one SAE on one store's evaluation split."""

from vitsae import evaluate, runtime, sweep

w = snakemake.wildcards


def work():
    model = sweep.load(snakemake.input.sae).to(runtime.device(snakemake.config["device"]))
    result = evaluate.evaluate(model, snakemake.input.store, snakemake.params.split,
                               dense_threshold=snakemake.params.dense_threshold)
    result.update({"model": w.model, "layer": int(w.layer), "sweep": w.sweep, "sae_id": w.sae_id,
                   "train_dataset": w.dataset, "eval_dataset": w.eval_dataset, "eval_split": snakemake.params.split})
    evaluate.write_json(result, snakemake.output[0])


runtime.run(snakemake, work, "evaluate")
