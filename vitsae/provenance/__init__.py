"""Provenance, beside the stages: what made every artifact, and the means to check it.

``records`` writes a record beside every output (inputs and their digests, params, config, code,
environment), ``lineage`` walks the records from a figure down to manifests and model weights and
verifies every digest along the way, ``page`` renders a lineage as one HTML page, ``crate`` packs the
run as a Workflow Run RO-Crate, and ``source`` digests the package's own code (a rule's import closure).
"""
