# vitsae: sparse autoencoders on DINOv2 and CLIP activations, from images to the paper's figures.
# The stages, one rule file each, in data-flow order (see README.md):
#   datasets → manifests → activation stores → SAEs → evaluation → transfer figure
from snakemake.utils import min_version

min_version("9.20")


# The demo is the default config. A --configfile given on the command line replaces it entirely
# (Snakemake would otherwise merge the two, mixing demo and paper datasets).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


rule all:
    input:
        "results/figures/transfer.pdf",
        "results/tables/transfer.csv",
    default_target: True


include: "workflow/rules/datasets.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
