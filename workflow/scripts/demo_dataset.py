"""Rule demo_dataset_*: draw a built-in demo dataset from its seed."""

import os
from pathlib import Path

from vitsae import demo, runtime

runtime.setup(snakemake.log[0])
gen = snakemake.params.generate
make = {"imagenet-demo": demo.make_imagenet_demo, "inat-demo": demo.make_inat_demo}[gen["kind"]]
runtime.log_exceptions(lambda: make(
    Path(os.path.commonpath(snakemake.output)), seed=gen["seed"], train_per_class=gen["train_per_class"],
    val_per_class=gen["val_per_class"], image_size=gen["image_size"],
))
