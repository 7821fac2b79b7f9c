"""A provenance record beside every artifact: what it is and everything that made it.

Every rule's job ends with :func:`write_record`, which puts ``<artifact>.prov.json`` beside each of its
outputs (for a Zarr store ``x.zarr`` the record is ``x.zarr.prov.json``, outside the store). A record
holds the rule, wildcards, inputs with their digests, their own records' ids and the sha256 of those
record files (so an edited record is named by its consumers' verification), params, the config
subset, the code (git commit, dirty flag, diff digest, package version, digests of the modules the
rule ran), the environment, the seed and the times. Its ``id`` depends only on what the artifact *is*
and how it was made (not on times or host), so a bitwise-identical rerun gets the same id.

:mod:`vitsae.provenance.lineage` walks the records from a figure down to manifests and model weights and
verifies every digest along the way; :mod:`vitsae.provenance.page` renders a lineage as one HTML page.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any

from vitsae.atomic import atomic_write
from vitsae.provenance.source import PACKAGE_DIR, source_digest

SCHEMA = "vitsae.provenance/1"
RECORD_SUFFIX = ".prov.json"
# Zarr metadata files whose bytes go into a store's tree digest (v3, and v2 for good measure).
ZARR_METADATA = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
#: Files a directory digest leaves out: Snakemake adds a timestamp file to every directory output
#: after the job (after the record was written), which is not part of the artifact.
NOT_CONTENT = frozenset({".snakemake_timestamp"})
PACKAGES = {  # environment key → distribution name
    "torch": "torch",
    "timm": "timm",
    "open_clip": "open_clip_torch",
    "zarr": "zarr",
    "numpy": "numpy",
    "snakemake": "snakemake",
    "vitsae": "vitsae",
}
_BLOCK = 1 << 20


# ---------------------------------------------------------------------------------------------
# Digests


def record_path(artifact: str | os.PathLike) -> Path:
    """``results/x.pt`` → ``results/x.pt.prov.json``; ``a/layer3.zarr`` → ``a/layer3.zarr.prov.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + RECORD_SUFFIX)


def digest_artifact(path: str | os.PathLike) -> str:
    """``"sha256:<hex>"`` of a file's bytes, or ``"tree:<hex>"`` of a directory (a Zarr store).

    The tree digest is *shallow*: sha256 over the sorted (relative posix path, size, last 4 bytes) of
    every file plus the bytes of every Zarr metadata file (``zarr.json``; its attrs name the model,
    weights and manifest), leaving out Snakemake's ``.snakemake_timestamp``. A store's chunks end in
    their crc32c (:func:`vitsae.data.store.create_split`), so the last 4 bytes of a chunk stand for all
    of it: a chunk rewritten in place with other data changes the digest, while only 4 bytes are read
    per file, so a store of any size digests in well under a second. A change that keeps a chunk's
    checksum (bit rot under an intact trailer) is what ``vitsae verify --deep`` finds, by reading every
    chunk (:func:`vitsae.data.store.check_chunks`).
    """
    path = Path(path)
    if path.is_file():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(_BLOCK):
                h.update(block)
        return f"sha256:{h.hexdigest()}"
    if path.is_dir():
        h = hashlib.sha256()
        files = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in filenames:
                if name in NOT_CONTENT:
                    continue
                full = Path(dirpath, name)
                files.append((full.relative_to(path).as_posix(), full))
        for rel, full in sorted(files):
            if full.name in ZARR_METADATA:
                h.update(f"{rel}\0{full.stat().st_size}\n".encode())
                h.update(full.read_bytes() + b"\0")
                continue
            with open(full, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - 4))
                tail = f.read(4)
            h.update(f"{rel}\0{size}\0{tail.hex()}\n".encode())
        return f"tree:{h.hexdigest()}"
    raise FileNotFoundError(f"{path}: no such file or directory, so it cannot be digested")


# ---------------------------------------------------------------------------------------------
# Environment and code


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def _static_environment() -> dict:
    """What cannot change while this process runs (computed once)."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "packages": {key: _version(dist) for key, dist in PACKAGES.items()},
    }


@lru_cache(maxsize=1)
def _cuda() -> tuple[str | None, str | None]:
    """The CUDA version and the GPU's name, or ``(None, None)`` where there is no GPU."""
    import torch

    # is_available() is the only CUDA call made where there is no GPU: it never creates a context.
    if torch.cuda.is_available():
        return torch.version.cuda, torch.cuda.get_device_name(torch.cuda.current_device())
    return None, None


def environment() -> dict:
    """python, platform, host, CPU, package versions, CUDA version and GPU name (if any), Slurm job id.

    CUDA and the GPU are asked of torch only where this process has loaded it: a job that never imported
    torch used no GPU, and its record says so (``null``) without paying torch's ~1 s import."""
    env = dict(_static_environment())
    env["packages"] = dict(env["packages"])
    env["cuda"], env["gpu"] = _cuda() if "torch" in sys.modules else (None, None)
    env["host"] = socket.gethostname()
    env["slurm_job_id"] = os.environ.get("SLURM_JOB_ID") or None
    return env


def _git(repo: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def code_version(modules: list[str], repo: Path | None = None) -> dict:
    """The git commit of the package's checkout, whether it is dirty, a digest of the diff, the
    package version and ``source_digest`` of each module. Without a git checkout (an installed
    package, or no git) ``commit``/``dirty``/``diff_sha256`` are None; the module digests still hold."""
    info: dict[str, Any] = {
        "commit": None,
        "dirty": None,
        "diff_sha256": None,
        "version": _version("vitsae"),
        "modules": {m: source_digest(m) for m in sorted(set(modules))},
    }
    if repo is None:
        # Only trust git if the package itself is tracked there (an installed copy inside some
        # unrelated checkout, such as a venv, must not borrow that checkout's commit).
        repo = PACKAGE_DIR
        tracked = _git(repo, "ls-files", "--", ".")
        if not tracked:
            return info
    head = _git(repo, "rev-parse", "HEAD")
    if head is None:
        return info
    info["commit"] = head.decode().strip()
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    if status is not None:
        info["dirty"] = bool(status.strip())
        if info["dirty"]:
            diff = _git(repo, "diff", "HEAD")
            info["diff_sha256"] = hashlib.sha256(diff).hexdigest() if diff is not None else None
    return info


# ---------------------------------------------------------------------------------------------
# Records


def _jsonable(obj: Any, where: str = "value") -> Any:
    """Paths → str, numpy scalars/arrays → Python, tuples/sets → lists, Snakemake namedlists → lists
    or dicts; anything else that JSON cannot hold fails naming where it was."""
    module = type(obj).__module__
    if (module == "numpy" or module.startswith("numpy.")) and hasattr(obj, "tolist"):
        return obj.tolist()  # numpy scalars (np.float32, np.bool_, ...) and arrays
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return str(obj)  # Snakemake's path strings are str subclasses
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return sorted(_jsonable(v, where) for v in obj)
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if callable(getattr(obj, "items", None)):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    raise TypeError(
        f"provenance: {where} is a {type(obj).__name__} ({obj!r:.80}), which cannot be written as JSON; "
        "pass str, numbers, lists or dicts"
    )


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_id(record: Mapping) -> str:
    """sha256 (first 16 hex) of what the artifact is and how it was made; not times, host or env."""
    core = {key: record[key] for key in ("rule", "wildcards", "artifact", "digest", "inputs", "params")}
    core["modules"] = record["code"]["modules"]
    return hashlib.sha256(_canonical(core)).hexdigest()[:16]


def content_sha256(record: Mapping) -> str:
    """sha256 of everything in a record but this digest itself (``content_sha256``): verify recomputes
    it, so an edit anywhere in a record (its config, its times) is seen, the root's included."""
    rest = {k: v for k, v in record.items() if k != "content_sha256"}
    return f"sha256:{hashlib.sha256(_canonical(rest)).hexdigest()}"


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).isoformat()


def store_attrs(path: Path) -> dict | None:
    """The root attrs of a Zarr store at ``path`` (read as JSON; no zarr import), or None."""
    if not path.is_dir():
        return None
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        meta = path / name
        if meta.is_file():
            try:
                data = json.loads(meta.read_text())
            except (OSError, ValueError):
                return None
            attrs = data.get(key, {}) if key else data
            return attrs if isinstance(attrs, dict) else None
    return None


#: cfg.json fields of an SAE copied into its record's ``training``: the values its trainer resolved for
#: the device it ran on (vitsae.sae.settings.TrainSettings.resolved), which the config's ``auto`` hides.
TRAINING_FIELDS = ("precision", "compile")


def sae_training(path: Path) -> dict | None:
    """:data:`TRAINING_FIELDS` of the ``cfg.json`` beside an ``sae.safetensors`` at ``path``, or None."""
    cfg_path = path.parent / "cfg.json"
    if path.name != "sae.safetensors" or not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return None
    return {k: cfg[k] for k in TRAINING_FIELDS if k in cfg} or None


def _read_id(artifact: Path) -> tuple[str | None, str | None]:
    """The id of ``artifact``'s record and the sha256 of the record file's bytes (None, None: no record)."""
    try:
        data = record_path(artifact).read_bytes()
        return json.loads(data).get("id"), f"sha256:{hashlib.sha256(data).hexdigest()}"
    except (OSError, ValueError, AttributeError):
        return None, None


def record_digest(artifact: str | os.PathLike) -> str | None:
    """sha256 of the bytes of ``artifact``'s record file, as its consumers keep it (None: no record)."""
    return _read_id(Path(artifact))[1]


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented, key-sorted JSON, written atomically."""
    text = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    return atomic_write(path, lambda p: p.write_text(text))


def _digest(path: str | os.PathLike, missing: str) -> str:
    """:func:`digest_artifact`, or FileNotFoundError with the message ``missing``."""
    try:
        return digest_artifact(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(missing) from e


def write_record(
    *,
    rule: str,
    wildcards: Mapping,
    inputs: list[str],
    outputs: list[str],
    params: Mapping,
    config: Mapping,
    modules: list[str],
    seed: int | None,
    started: float,
    ended: float,
    sources: Mapping[str, list[str]] | None = None,
) -> list[Path]:
    """Write ``<output>.prov.json`` beside every output (atomically); return the record paths.

    ``started``/``ended`` are ``time.time()`` values. Inputs are digested here, each once; an input that
    has a record of its own is linked by that record's id. Each record names every input, or, for an
    output in ``sources``, only the inputs listed there (a job that makes one output per SAE of a sweep
    from that SAE and the store).
    """
    wildcards = _jsonable(wildcards, f"rule {rule}: wildcards")
    params = _jsonable(params, f"rule {rule}: params")
    config = _jsonable(config, f"rule {rule}: config")
    input_entries = []
    for p in inputs:
        digest = _digest(p, f"rule {rule}: input {p} does not exist, so its provenance cannot be recorded")
        rid, rsha = _read_id(Path(p))
        entry = {"path": str(p), "digest": digest, "record": rid}
        if rsha is not None:  # the record as its consumer read it: an edit to it is seen by verify
            entry["record_sha256"] = rsha
        input_entries.append(entry)
    code = code_version(list(modules))
    env = environment()
    written = []
    for out in outputs:
        own = None if sources is None or out not in sources else {str(p) for p in sources[out]}
        if own is not None and not own <= {e["path"] for e in input_entries}:
            raise ValueError(
                f"rule {rule}: the sources of {out} are not all inputs of the job: {sorted(own)}"
            )
        out_path = Path(out)
        digest = _digest(
            out_path, f"rule {rule}: output {out} does not exist; write the record after the outputs"
        )
        record: dict[str, Any] = {
            "schema": SCHEMA,
            "artifact": str(out),
            "digest": digest,
            "rule": rule,
            "wildcards": wildcards,
            "inputs": input_entries if own is None else [e for e in input_entries if e["path"] in own],
            "params": params,
            "config": config,
            "code": code,
            "environment": env,
            "seed": None if seed is None else int(seed),
            "started": _iso(started),
            "ended": _iso(ended),
            "duration_s": round(float(ended) - float(started), 3),
        }
        attrs = store_attrs(out_path)
        if attrs and ("model" in attrs or "weights" in attrs):
            # Kept in the record so the lineage still names the weights after the store is deleted.
            record["store"] = {k: attrs.get(k) for k in ("model", "weights", "manifest_sha256")}
        training = sae_training(out_path)
        if training is not None:  # how the SAE was trained, as resolved for its device (cfg.json)
            record["training"] = training
        record["id"] = record_id(record)
        record["content_sha256"] = content_sha256(record)
        path = record_path(out_path)
        write_json(path, record)
        written.append(path)
    return written


def read_record(artifact: str | os.PathLike) -> dict:
    path = record_path(artifact)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{artifact}: no provenance record; rerun the rule that makes it (expected {path})"
        ) from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(
            f"{path}: provenance record is not valid JSON ({e}); rerun the rule that makes {artifact}"
        ) from e
