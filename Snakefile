# vitsae: sparse autoencoders on DINOv2 and CLIP activations, from images to the paper's figures.
# The stages, one rule file each, in data-flow order (see README.md):
#   datasets → manifests → activation stores → SAEs → evaluation → transfer figure → provenance
#   SAEs → feature statistics → concept tables (WordNet, iNat taxonomy) → findings 1 and 2, cards;
#   decoder directions → feature-level transfer
#   (lineage page per figure, RO-Crate of the run)
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
        "results/figures/transfer.pdf",
        "results/tables/transfer.csv",
        expand("results/figures/{figure}.pdf", figure=FIGURES),
        expand("results/tables/pareto-{sweep}.csv", sweep=SWEEPS),
        expand("results/provenance/{figure}.html", figure=FIGURES),
        "results/provenance/ro-crate",
        concept_tables(),
        card_dirs(),


include: "workflow/rules/datasets.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/figures.smk"
