"""Stage 2, SAEs: activation stores in, trained SAEs and their evaluations out.

``settings`` (import-light) turns a config sweep into SAE specs and ids; ``architectures`` holds one
module per architecture behind a registry; ``train`` is the stacked trainer (every SAE of a sweep in one
pass over the data); ``checkpoint`` is the inference module and its files (a leaf); ``evaluate`` measures
reconstruction on a store's split.
"""
