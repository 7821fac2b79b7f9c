"""Rule train_sae_<sweep>: every SAE of one sweep on the training split of an activation store, one data pass."""

from pathlib import Path

from vitsae import runtime
from vitsae.sae.settings import SAESpec, TrainSettings
from vitsae.sae.train import train_sweep_from_store

settings = snakemake.params.settings
w = snakemake.wildcards
specs = [SAESpec(**spec) for spec in settings["specs"]]
out_dirs = [Path(p).parent for p in snakemake.output.sae]
meta = {"dataset": w.dataset, "model": w.model, "layer": int(w.layer), "sweep": snakemake.params.sweep,
        "store": snakemake.input.store, "split": settings["train_split"]}  # fmt: skip
runtime.run(snakemake, lambda: train_sweep_from_store(
    snakemake.input.store, settings["train_split"], specs, TrainSettings(**settings["training"]), out_dirs,
    meta, device=runtime.device(snakemake.config["device"]), state_dir=snakemake.params.state_dir,
))  # fmt: skip
