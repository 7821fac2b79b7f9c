"""Rule train_sae: train one SAE on the training split of an activation store."""

from pathlib import Path

from vitsae import runtime, sae

settings = dict(snakemake.params.sweep)
split = settings.pop("train_split")
w = snakemake.wildcards
meta = {"dataset": w.dataset, "model": w.model, "layer": int(w.layer), "sweep": w.sweep, "sae_id": w.sae_id,
        "store": snakemake.input.store, "split": split}
runtime.run(snakemake, lambda: sae.train_from_store(
    snakemake.input.store, split, sae.SAEConfig.from_dict(settings), Path(snakemake.output.sae).parent, meta,
    device=runtime.device(snakemake.config["device"]),
), "train_sae")
