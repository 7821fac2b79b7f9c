"""Stage 1, data: images in, activation stores out.

``demo`` draws the synthetic datasets, ``manifest`` lists and hashes a dataset's images, ``models`` runs
DINOv2/CLIP up to one block, ``activations`` writes a store per (dataset, model, layer), ``store`` is the
Zarr contract every later stage reads, and ``loader`` streams a store's tokens in a seeded, resumable
order. ``settings`` holds the stage's typed settings (import-light).
"""
