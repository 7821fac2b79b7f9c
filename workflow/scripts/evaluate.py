"""Rule evaluate_<sweep>: reconstruction metrics of every SAE of one sweep's training job on one store's
evaluation split, in one pass over the store; each SAE's identity from its cfg.json, the evaluated dataset
from the store. Each output's provenance record names its own SAE and the store."""

from vitsae import runtime
from vitsae.data.store import open_store
from vitsae.sae import evaluate
from vitsae.sae.checkpoint import load


def work():
    device = runtime.device(snakemake.config["device"])
    saes = [load(path).to(device) for path in snakemake.input.sae]
    results = evaluate.evaluate_many(saes, snakemake.input.store, snakemake.params.split,
                                     dense_threshold=snakemake.params.dense_threshold)  # fmt: skip
    eval_dataset = open_store(snakemake.input.store).attrs["dataset"]
    for sae, result, out in zip(saes, results, snakemake.output, strict=True):
        result.update(
            {**evaluate.identity(sae), "eval_dataset": eval_dataset, "eval_split": snakemake.params.split}
        )
        evaluate.write_json(result, out)


runtime.run(
    snakemake,
    work,
    inputs_of=lambda i: [snakemake.input.sae[i], snakemake.input.cfg[i], snakemake.input.store],
)
