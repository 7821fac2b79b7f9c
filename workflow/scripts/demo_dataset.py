"""Rule demo_dataset_*: draw a built-in demo dataset from its seed.

No provenance record beside each image (that would change the dataset's on-disk layout): the
manifest's record digests every image it read."""

import os
from pathlib import Path

from vitsae import runtime
from vitsae.data import demo

gen = snakemake.params.generate
make = {"imagenet-demo": demo.make_imagenet_demo, "inat-demo": demo.make_inat_demo}[gen["kind"]]
runtime.run(snakemake, lambda: make(
    Path(os.path.commonpath(snakemake.output)), seed=gen["seed"], train_per_class=gen["train_per_class"],
    val_per_class=gen["val_per_class"], image_size=gen["image_size"],
), record=False)  # fmt: skip
