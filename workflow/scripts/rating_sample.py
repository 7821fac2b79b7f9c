"""Rule rating_sample: the blinded rating sample's key (trial -> SAE, feature, label), seeded."""

from vitsae import runtime
from vitsae.analysis import ratings
from vitsae.analysis.settings import RatingSettings

runtime.run(snakemake, lambda: ratings.write_sample(
    list(snakemake.input.tables), list(snakemake.input.catch), RatingSettings.from_params(snakemake.params.rating),
    snakemake.output[0],
))  # fmt: skip
