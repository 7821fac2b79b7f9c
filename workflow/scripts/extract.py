"""Rule extract: run one model up to one block over a dataset's images into a Zarr store."""

from vitsae import activations, runtime
from vitsae.models import ModelSpec

m = snakemake.params.model
runtime.run(snakemake, lambda: activations.extract(
    snakemake.input.manifest, snakemake.params.root, snakemake.wildcards.dataset,
    ModelSpec.from_config(m["name"], m), int(snakemake.wildcards.layer), snakemake.output[0],
    splits=snakemake.params.splits, batch_size=m["batch_size"],
    num_workers=snakemake.config["extraction"]["num_workers"], device=runtime.device(snakemake.config["device"]),
), "extract")
