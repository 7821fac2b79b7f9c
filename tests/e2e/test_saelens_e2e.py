"""SAELens loads the demo's SAEs: ``vitsae export --format saelens`` on a real demo SAE of each model, loaded
with ``sae_lens.SAE.load_from_disk``, gives vitsae's features and reconstructions on real demo tokens (the
SAE's own store, validation split, its token kind); and the demo's SAE files have ordinary modes."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vitsae.atomic import file_mode
from vitsae.data.store import open_store, split_array, token_slice
from vitsae.sae.checkpoint import load

sae_lens = pytest.importorskip("sae_lens")

pytestmark = pytest.mark.e2e

VITSAE = Path(sys.executable).parent / "vitsae"  # the console script pip installs beside this python
N_IMAGES = 64  # validation images per store: a few thousand tokens


def demo_tokens(demo: Path, cfg: dict) -> torch.Tensor:
    """The first ``N_IMAGES`` validation images' tokens of the SAE's token kind, from its own store,
    as float32 rows ``[N, d_in]`` (the store holds fp16)."""
    group = open_store(demo / cfg["meta"]["store"])
    arr = split_array(group, "val")
    tokens = token_slice(dict(group.attrs["token_layout"]), cfg["token_kind"])
    x_BTD = np.asarray(arr[:N_IMAGES, tokens])
    return torch.from_numpy(x_BTD.reshape(-1, x_BTD.shape[-1]).astype(np.float32))


@pytest.mark.parametrize("model", ["clip-b16", "dinov2-s14"])
def test_saelens_loads_an_exported_demo_sae_and_matches(demo, model, tmp_path):
    sae_dir = min((demo / "results/sae").glob(f"*/{model}/layer*/paper/*/sae.safetensors")).parent
    out_dir = tmp_path / "saelens"
    proc = subprocess.run(
        [str(VITSAE), "export", "--format", "saelens", str(sae_dir), str(out_dir)],
        cwd=demo, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ours = load(sae_dir)
    theirs = sae_lens.SAE.load_from_disk(out_dir)
    assert theirs.cfg.metadata.sae_id == ours.cfg["sae_id"] and theirs.cfg.metadata.model == model
    x = demo_tokens(demo, ours.cfg)
    assert x.shape[0] >= 1000 and x.shape[1] == ours.d_in
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        xhat_ours, xhat_theirs = ours.decode(f_ours), theirs.decode(f_theirs)
    l0 = (f_ours > 0).sum(-1).float().mean().item()
    assert 1 <= l0 < ours.d_sae / 4  # a trained, sparse SAE: features worth comparing
    # the normalisation matters on these tokens: unfolded weights would reconstruct far off
    assert abs(float(ours.scale) - 1) > 0.05
    d_feat = (f_ours - f_theirs).abs().max().item()
    d_recon = (xhat_ours - xhat_theirs).abs().max().item()
    print(f"{model} {ours.cfg['sae_id']}: {x.shape[0]} tokens, L0 {l0:.1f}, scale {float(ours.scale):.4f}, "
          f"max |Δ features| {d_feat:.3g}, max |Δ reconstruction| {d_recon:.3g}")  # fmt: skip
    assert d_feat <= 1e-5 and d_recon <= 1e-5
    assert (f_theirs > 0).sum(-1).float().mean().item() == l0


def test_demo_sae_files_have_the_umask_mode(demo):
    files = [p for name in ("sae.safetensors", "cfg.json") for p in (demo / "results/sae").rglob(name)]
    assert len(files) >= 2 * 16
    modes = {str(p.relative_to(demo)): oct(p.stat().st_mode & 0o777) for p in files}
    assert {m for m in modes.values()} == {oct(file_mode())}, modes
