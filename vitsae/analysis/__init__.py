"""Stage 3, analysis: SAEs and stores in, the paper's tables and figures out.

``stats`` (per-feature statistics, one pass per SAE), ``thumbnails`` (model-free image descriptors),
``wordnet`` and ``taxonomy`` (the hierarchies), ``concepts`` (label rules), ``nulls`` (random-image null
models), ``concept_tables`` (a sweep's tables), ``findings`` (findings 1 and 2), ``transfer`` and
``decoders`` (finding 3), ``sweep_figures`` (training curves, Pareto), ``cards`` (feature cards),
``planted`` (the demo's planted concepts found), ``charts`` (one look for every figure) and
``settings`` (the label rules, import-light).
"""
