"""Rule thumbnails: model-free visual descriptors (a 4x4 RGB thumbnail, cell descriptors of the centre
square) of every image of one split."""

from vitsae import runtime
from vitsae.analysis.thumbnails import thumbnails

runtime.run(snakemake, lambda: thumbnails(
    snakemake.input.manifest, snakemake.params.root, snakemake.wildcards.split, snakemake.output[0],
    size=snakemake.params.size, cells=snakemake.params.cells,
))  # fmt: skip
