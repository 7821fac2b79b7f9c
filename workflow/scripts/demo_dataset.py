"""Rule demo_dataset: draw a built-in demo dataset from its seed."""

from pathlib import Path

from vitsae import demo, runtime

runtime.setup(snakemake.log[0])
gen = snakemake.params.dataset["generate"]
make = {"imagenet-demo": demo.make_imagenet_demo, "inat-demo": demo.make_inat_demo}[gen["kind"]]
runtime.log_exceptions(lambda: make(
    Path(snakemake.output[0]), seed=gen["seed"], train_per_class=gen["train_per_class"],
    val_per_class=gen["val_per_class"], image_size=gen["image_size"],
))
