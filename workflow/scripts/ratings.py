"""Rule ratings: the raters' exported files scored (agreement, precision per label and model)."""

from vitsae import runtime
from vitsae.analysis import ratings
from vitsae.analysis.settings import RatingSettings

i, o = snakemake.input, snakemake.output
runtime.run(snakemake, lambda: ratings.write_ratings(
    i.sample, list(i.ratings), list(i.tables), RatingSettings.from_params(snakemake.params.rating), o.ratings,
    o.agreement,
))  # fmt: skip
