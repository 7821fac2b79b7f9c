# vitsae: sparse autoencoders on DINOv2 and CLIP activations, from images to the paper's evidence.
# One rule file per stage, in data-flow order (README.md, "Stages"):
#   datasets → manifests → activation stores → SAEs and their evaluations → feature statistics →
#   concept tables → findings, claims, cards, feature-level transfer → figures → provenance
from snakemake.utils import min_version

min_version("9.20")


# The demo is the default config. A --configfile given on the command line replaces it entirely
# (Snakemake would otherwise merge the two, mixing demo and paper datasets).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


# Each wildcard matches only names from the config, so no path can match two rules two ways.
wildcard_constraints:
    dataset=alternatives(DATASETS),
    eval_dataset=alternatives(DATASETS),
    model=alternatives(MODELS),
    sweep=alternatives(SWEEPS),
    layer=r"\d+",
    sae_id=r"[A-Za-z0-9_.+-]+",
    figure=alternatives(FIGURES),
    split=r"[A-Za-z0-9_]+",


rule all:
    default_target: True
    input:
        [FIGURE.format(figure=f) for f in FIGURES],
        layout.final_tables(RUN),
        [LINEAGE_HTML.format(figure=f) for f in FIGURES],
        CRATE,
        CRATE_METADATA,
        layout.concept_tables(RUN),
        layout.card_dirs(RUN),
        BROWSER,
        LINEAGE_HTML.format(figure="browser"),
        RATINGS,


include: "workflow/rules/datasets.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/browser.smk"
include: "workflow/rules/provenance.smk"
