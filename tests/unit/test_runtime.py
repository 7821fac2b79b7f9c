"""vitsae.runtime: a job's thread pool is sized whether or not its work imports torch, and a job that makes
one output per SAE records each output with the inputs it was made from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from vitsae.provenance.records import read_record
from vitsae.runtime import run


@pytest.mark.parametrize("threads, torch_first", [(1, False), (1, True), (3, True)])
def test_setup_sizes_torchs_pool_before_or_after_torch_is_imported(threads: int, torch_first: bool) -> None:
    # torch's default is one thread per core (at most the cores, from OMP_NUM_THREADS too): 1 differs from
    # it on this 2-core machine, and 3 can only come from set_num_threads
    code = (
        ("import torch\n" if torch_first else "")
        + "import sys\nfrom vitsae.runtime import setup\n"
        + f"setup(None, {threads})\n"
        + "imported = 'torch' in sys.modules\n"
        + "import torch\nprint(imported, torch.get_num_threads())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    # a job whose work never imports torch does not pay for it in setup
    assert out == [str(torch_first), str(threads)]


# The scripts of the rules that run models or SAEs (the GPU rules). Every other job only reads tables,
# statistics or decoders, and importing torch would cost it ~2 CPU-seconds: on the demo ~40 such jobs, on
# Slurm each job again.
TORCH_SCRIPTS = {
    "downstream",
    "evaluate",
    "extract",
    "feature_stats",
    "quality",
    "train_sae",
    "transfer_baselines",
}


def test_only_the_scripts_of_model_and_sae_rules_import_torch() -> None:
    scripts = {s.stem: s for s in (Path(__file__).resolve().parents[2] / "workflow" / "scripts").glob("*.py")}
    assert TORCH_SCRIPTS < set(scripts) and len(scripts) > 20
    code = (
        "import ast, sys\n"
        "tree = ast.parse(open(sys.argv[1]).read())\n"
        "for node in tree.body:  # the script's own top-level imports, as the job runs them\n"
        "    if isinstance(node, (ast.Import, ast.ImportFrom)):\n"
        "        exec(compile(ast.Module([node], []), sys.argv[1], 'exec'))\n"
        "print('torch' in sys.modules)\n"
    )
    run = [sys.executable, "-c", code]
    loads = {
        name
        for name, path in scripts.items()
        if name not in TORCH_SCRIPTS
        and subprocess.run([*run, str(path)], capture_output=True, text=True, check=True).stdout.strip()
        == "True"
    }
    assert loads == set()
    # the check sees torch: a GPU rule's script
    assert (
        subprocess.run(
            [*run, str(scripts["evaluate"])], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "True"
    )


class _Files(list):
    """Snakemake's input/output/params: a list with named items."""

    def __init__(self, named: dict):
        flat = [p for v in named.values() for p in (v if isinstance(v, list) else [v])]
        super().__init__(flat)
        self._named = named
        for k, v in named.items():
            setattr(self, k, v)

    def items(self):
        return self._named.items()


def _job(tmp_path: Path, outputs: list[str]):
    saes = [tmp_path / f"sae{i}.safetensors" for i in range(2)]
    store = tmp_path / "store.bin"
    for i, p in enumerate([*saes, store]):
        p.write_bytes(bytes([i]) * 8)

    return SimpleNamespace(
        rule="evaluate_paper",
        threads=1,
        log=[str(tmp_path / "job.log")],
        wildcards=_Files({"dataset": "toy"}),
        input=_Files({"sae": [str(p) for p in saes], "store": str(store)}),
        output=_Files({"evals": outputs}),
        params=_Files({"code": {"vitsae.atomic": "-"}}),
        config={"seed": 0},
    )


def test_records_name_every_input_or_each_outputs_own(tmp_path: Path) -> None:
    outputs = [str(tmp_path / f"eval{i}.json") for i in range(2)]
    job = _job(tmp_path, outputs)

    def work():
        for out in outputs:
            Path(out).write_text("{}")

    run(job, work, inputs_of=lambda i: [job.input.sae[i], job.input.store])
    for i, out in enumerate(outputs):
        rec = read_record(out)
        assert [Path(e["path"]).name for e in rec["inputs"]] == [f"sae{i}.safetensors", "store.bin"]
        assert rec["rule"] == "evaluate_paper" and rec["artifact"] == out
    assert read_record(outputs[0])["started"] == read_record(outputs[1])["started"]  # one job (the crate)
    run(job, work)  # without inputs_of: every input of the job
    names = [Path(e["path"]).name for e in read_record(outputs[1])["inputs"]]
    assert names == ["sae0.safetensors", "sae1.safetensors", "store.bin"]
    assert "provenance: wrote 2 records" in Path(job.log[0]).read_text()
    assert json.loads(Path(outputs[0]).read_text()) == {}
