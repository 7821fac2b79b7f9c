"""The demo's activation stores, read by a client this project did not write: xarray."""

import warnings

import numpy as np
import pytest

from vitsae.data.store import check_chunks, open_store, split_array

pytestmark = pytest.mark.e2e


def test_xarray_opens_every_demo_store_and_reads_what_the_store_reader_reads(demo):
    import xarray as xr

    stores = sorted((demo / "results/activations").glob("*/*/layer*.zarr"))
    assert len(stores) == 6  # 2 datasets x 3 models (the baseline model's stores too)
    for path in stores:
        assert (path / ".snakemake_timestamp").exists()  # Snakemake's, inside every directory output
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning about it, nor about anything else
            ds = xr.open_zarr(path)
        group = open_store(path)
        for split, n in group.attrs["splits"].items():
            assert ds[split].dims == (f"{split}_image", "token", "dim") and ds.sizes[f"{split}_image"] == n
            ours = split_array(group, split)
            np.testing.assert_array_equal(ds[split][n // 2 : n // 2 + 3].values, ours[n // 2 : n // 2 + 3])
            np.testing.assert_array_equal(ds[f"{split}_rows"].values, group[f"{split}_rows"][:])
        checked, bad = check_chunks(path)
        assert bad == [] and checked == sum(
            len(list((path / name / "c").rglob("*")))
            - len([p for p in (path / name / "c").rglob("*") if p.is_dir()])
            for name in group.array_keys()
        )
