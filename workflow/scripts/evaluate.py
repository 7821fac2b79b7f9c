"""Rule evaluate: reconstruction metrics of one SAE on one store's evaluation split; the SAE's identity
from its cfg.json, the evaluated dataset from the store."""

from vitsae import runtime
from vitsae.data.store import open_store
from vitsae.sae import evaluate
from vitsae.sae.checkpoint import load


def work():
    sae = load(snakemake.input.sae).to(runtime.device(snakemake.config["device"]))
    result = evaluate.evaluate(sae, snakemake.input.store, snakemake.params.split,
                               dense_threshold=snakemake.params.dense_threshold)  # fmt: skip
    result.update({**evaluate.identity(sae), "eval_dataset": open_store(snakemake.input.store).attrs["dataset"],
                   "eval_split": snakemake.params.split})  # fmt: skip
    evaluate.write_json(result, snakemake.output[0])


runtime.run(snakemake, work)
