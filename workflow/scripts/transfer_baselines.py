"""Rule transfer_baselines: finding 3's baselines (PCA fitted on the source, the re-centred source SAE) for
every transfer SAE of one (model, layer) on every dataset it was not trained on."""

from pathlib import Path

from vitsae import runtime
from vitsae.analysis.baselines import write_baselines

p, i = snakemake.params, snakemake.input
runtime.run(snakemake, lambda: write_baselines(
    dict(zip(p.datasets, i.stores, strict=True)), [Path(s).parent for s in i.sae], list(i.evals), p.train_split,
    p.eval_split, p.max_tokens, snakemake.output[0], seed=p.seed, device=runtime.device(snakemake.config["device"]),
))  # fmt: skip
