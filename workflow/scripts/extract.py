"""Rules extract and extract_part: run one model up to one block over a dataset's images into a Zarr store.

extract_part writes part {part} of {nparts}; extract either runs the whole extraction (parts: 1) or
joins the parts it was given (vitsae.store.assemble).
"""

from vitsae import activations, runtime, store
from vitsae.models import ModelSpec

m, ex, wc = snakemake.params.model, snakemake.params.extraction, snakemake.wildcards


def work():
    if snakemake.rule == "extract" and int(snakemake.params.parts) > 1:
        return store.assemble(list(snakemake.input.parts), snakemake.output[0])
    part = (int(wc.part), int(wc.nparts)) if snakemake.rule == "extract_part" else None
    return activations.extract(
        snakemake.input.manifest, snakemake.params.root, wc.dataset, ModelSpec.from_config(m["name"], m),
        int(wc.layer), snakemake.output[0], splits=snakemake.params.splits, batch_size=m["batch_size"],
        num_workers=snakemake.config["extraction"]["num_workers"], device=runtime.device(snakemake.config["device"]),
        tokens=ex["tokens"], decode=ex["decode"], precision=ex["precision"], part=part,
    )


runtime.run(snakemake, work, "extract")
