"""Rule downstream: accuracy recovered on one dataset's store (the evaluated one) by every transfer SAE of its
(model, layer), whichever dataset each was trained on: a probe on the model's final representation, clean,
with the layer mean-ablated, and with each SAE's reconstruction spliced in."""

from pathlib import Path

from vitsae import runtime
from vitsae.analysis.downstream import write_downstream
from vitsae.analysis.settings import TransferSettings

p, i = snakemake.params, snakemake.input
runtime.run(snakemake, lambda: write_downstream(
    i.store, i.manifest, [Path(s).parent for s in i.sae], p.train_split, p.eval_split, snakemake.output[0],
    settings=TransferSettings(**p.settings), device=runtime.device(snakemake.config["device"]), seed=p.seed,
))  # fmt: skip
