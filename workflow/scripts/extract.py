"""Rules extract and extract_part: run one model up to one block over a dataset's images into a Zarr store.

extract_part writes part {part} of {nparts}; extract either runs the whole extraction (parts: 1) or
joins the parts it was given (vitsae.data.store.assemble).
"""

from vitsae import runtime
from vitsae.data import activations, store
from vitsae.data.settings import ModelSpec

p, wc = snakemake.params, snakemake.wildcards


def work():
    if snakemake.rule == "extract" and int(p.parts) > 1:
        return store.assemble(list(snakemake.input.parts), snakemake.output[0])
    part = (int(wc.part), int(wc.nparts)) if snakemake.rule == "extract_part" else None
    ex = p.extraction
    return activations.extract(
        snakemake.input.manifest,
        p.root,
        wc.dataset,
        ModelSpec(**p.model),
        int(wc.layer),
        snakemake.output[0],
        splits=p.splits,
        batch_size=p.batch_size,
        num_workers=p.num_workers,
        device=runtime.device(snakemake.config["device"]),
        tokens=ex["tokens"],
        decode=ex["decode"],
        precision=ex["precision"],
        part=part,
    )


runtime.run(snakemake, work)
