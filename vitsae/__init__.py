"""vitsae: sparse autoencoders on DINOv2 and CLIP activations, from images to the paper's evidence.

The package in data-flow order, one subpackage per stage (imports flow one way: data → sae → analysis;
provenance beside them; the workflow glue on top):

* :mod:`vitsae.data`: demo datasets, manifests, models, activation stores, the token stream;
* :mod:`vitsae.sae`: SAE settings, architectures, the stacked trainer, checkpoints, evaluation;
* :mod:`vitsae.analysis`: feature statistics, concept tables, findings, transfer, cards, charts;
* :mod:`vitsae.provenance`: records, lineage pages, verification, the RO-Crate, code digests;
* :mod:`vitsae.config` (the config, validated once and typed), :mod:`vitsae.layout` (every path),
  :mod:`vitsae.runtime` (what each rule's script does first and last), :mod:`vitsae.plan` (what a config
  costs) and :mod:`vitsae.cli` (the ``vitsae`` command).
"""
