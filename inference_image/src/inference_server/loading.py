"""Finding, verifying and loading a model; sizing torch's threads to the container."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_server.manifest import MANIFEST_NAME, IntegrityError, verify_manifest, write_manifest

log = logging.getLogger("inference_server.loading")


def cpu_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this container may use: its cgroup quota if set, else the CPUs it may run on.

    ``os.cpu_count()`` is the host's count; a pod limited to 2 CPUs on a 64-core node
    that started 64 threads would thrash.
    """
    quota = None
    v2 = cgroup_root / "cpu.max"
    try:
        if v2.is_file():
            limit, period = v2.read_text().split()[:2]
            if limit != "max":
                quota = int(limit) / int(period)
        else:
            limit_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
            period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
            if limit_us > 0:
                quota = limit_us / period_us
    except (OSError, ValueError):
        quota = None
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if quota is None:
        return available
    return max(1, min(available, int(quota + 0.5)))


def default_torch_threads(cpus: int) -> int:
    """Leave one CPU to the HTTP event loop when there are two or more.

    Oversubscribed, torch's OpenMP threads stall at every op's barrier whenever one of them
    is descheduled; on 2 CPUs one torch thread served more, with a lower P99, than two.
    """
    return max(1, cpus - 1)


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    model_id: str
    revision: str
    device: str
    dtype: str
    load_seconds: float


_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: a local directory, or a pinned revision through the mirror."""

    directory: Path | None = None
    model_id: str | None = None
    revision: str | None = None
    cache_dir: Path = Path("/models")
    # The mirror's manifest-signing public key (PEM): hub models are trusted only through it.
    mirror_public_key: str | None = None

    def __post_init__(self) -> None:
        if self.directory is not None:
            return
        if not self.model_id or not self.revision:
            raise ValueError("give --model-dir, or --model-id with a pinned --revision")
        if not _COMMIT.fullmatch(self.revision):
            raise ValueError(f"--revision {self.revision!r}: pin a 40-character commit hash; a branch or tag can move")


def resolve_model_dir(source: ModelSource) -> tuple[Path, Path]:
    """The model directory and the manifest to verify it against.

    A hub model is downloaded through ``HF_ENDPOINT`` (the platform's mirror) into the cache
    volume. The first time a revision lands there, every file is checked against the
    checksums the mirror publishes (LFS SHA-256, git blob ids) and a manifest is recorded
    beside the cache (model id, revision, per-file SHA-256 and size, download time, endpoint);
    every start after that verifies the files against it without touching the network.
    """
    if source.directory is not None:
        if not source.directory.is_dir():
            raise FileNotFoundError(f"--model-dir {source.directory} is not a directory")
        return source.directory, source.directory / MANIFEST_NAME
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.file_download import repo_folder_name

    model_id, revision, cache_dir = source.model_id, source.revision, source.cache_dir
    assert model_id and revision  # ModelSource checked both
    snapshot = Path(snapshot_download(repo_id=model_id, revision=revision, cache_dir=str(cache_dir)))
    manifest = cache_dir / "manifests" / repo_folder_name(repo_id=model_id, repo_type="model") / f"{revision}.json"
    if source.mirror_public_key is not None:
        _from_signed_manifest(source, snapshot, manifest, constants.ENDPOINT)
        return snapshot, manifest
    if not manifest.is_file():
        verification = HfApi().verify_repo_checksums(model_id, revision=revision, cache_dir=str(cache_dir))
        problems = [f"{m['path']}: {m['algorithm']} {m['actual']} does not match {m['expected']} published for "
                    f"{model_id}@{revision}" for m in verification.mismatches]  # fmt: skip
        problems += [f"{path}: published for {model_id}@{revision} but not downloaded"
                     for path in verification.missing_paths]  # fmt: skip
        if problems:
            raise IntegrityError(f"{snapshot}: refusing to load; " + "; ".join(problems))
        manifest.parent.mkdir(parents=True, exist_ok=True)
        write_manifest(snapshot, model_id, revision, target=manifest, source=constants.ENDPOINT)
    return snapshot, manifest


def _from_signed_manifest(source: ModelSource, snapshot: Path, manifest: Path, endpoint: str) -> None:
    """Write ``manifest`` from the mirror's signed one, after checking its signature (every start:
    the signed copy kept in the cache is checked again, so editing it is caught too)."""
    from inference_server import provenance

    assert source.model_id and source.revision and source.mirror_public_key
    signed = manifest.with_name(f"{source.revision}.signed.json")
    fetched = not signed.is_file()
    text, signature = (provenance.fetch_signed_manifest(endpoint, source.model_id, source.revision) if fetched
                       else provenance.load(signed))  # fmt: skip
    files = provenance.verify_signed_manifest(text, signature, source.mirror_public_key, source.model_id, source.revision)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    if fetched:
        provenance.save(signed, text, signature)
    partial = manifest.with_name(manifest.name + ".partial")
    partial.write_text(json.dumps({"modelId": source.model_id, "revision": source.revision, "source": endpoint,
                                   "signedBy": "mirror", "files": files}, indent=2) + "\n", encoding="utf-8")  # fmt: skip
    partial.replace(manifest)
    log.info("signed manifest verified", extra={"model_id": source.model_id, "revision": source.revision,
                                                "files": len(files)})  # fmt: skip


def load_model(
    model_dir: Path,
    device: str = "auto",
    quantize_int8: bool = False,
    torch_threads: int | None = None,
    manifest_path: Path | None = None,
) -> LoadedModel:
    """Verify every file against the manifest, then load; CUDA fp16/bf16 when present."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # logs are JSON lines; no progress bars in them
    started = time.monotonic()
    manifest = verify_manifest(model_dir, manifest_path)  # before a single byte of weights is trusted
    threads = torch_threads or default_torch_threads(cpu_limit())
    torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    if quantize_int8:
        if device != "cpu":
            raise ValueError("--quantize-int8 is dynamic quantization for CPU; on CUDA use fp16/bf16")
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    seconds = time.monotonic() - started
    log.info("model loaded", extra={"model_id": manifest.get("modelId"), "device": device, "threads": threads,
                                    "seconds": round(seconds, 3)})  # fmt: skip
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=manifest.get("modelId") or model_dir.name,
        revision=manifest.get("revision") or "unknown",
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        load_seconds=seconds,
    )
