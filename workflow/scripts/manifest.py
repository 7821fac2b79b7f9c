"""Rule manifest: list, decode and hash every image of a dataset into a Parquet manifest."""

from pathlib import Path

from vitsae import runtime
from vitsae.data import manifest

ds = snakemake.params.dataset


def work():
    df = manifest.build_manifest(
        snakemake.wildcards.dataset, ds["format"], Path(ds["root"]), ds["splits"],
        max_per_class=ds["max_per_class"], seed=snakemake.params.seed, on_corrupt=ds["on_corrupt"],
    )  # fmt: skip
    manifest.write_manifest(df, snakemake.output[0])


runtime.run(snakemake, work)
