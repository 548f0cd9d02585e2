"""What an image's own layers carry from the build host: nothing of pip's configuration, ever."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from platformctl import images

from .containers import export_layers, layer_members


@dataclass(frozen=True)
class LayerScan:
    total_bytes: int  # every layer, uncompressed: the image's size
    own_layers: int  # the layers the Dockerfile added past its base's
    leaks: list[str]


def scan_layers(engine: str, built: images.BuiltImage, tmp_path: Path) -> LayerScan:
    """Every layer the Dockerfile added (past its base's, which carry a CA bundle of their own):
    no secret mount, no pip.conf or build-ca, nothing under /pip-local, no copy of the host's CA
    bundle, no small config file naming the /pip-local mount; and no host path or pip setting in
    the image's history or environment."""
    settings = images.effective_pip_settings(sys.executable)
    config = images.pip_build_config(settings)
    ca_digest = hashlib.sha256(config.ca_file.read_bytes()).hexdigest() if config.ca_file else None
    ca_size = config.ca_file.stat().st_size if config.ca_file else -1
    _, layers = export_layers(engine, built.ref, tmp_path / "image")
    base_layers = images.layer_ids(engine, built.base)
    assert images.layer_ids(engine, built.ref)[: len(base_layers)] == base_layers, "image does not start with its base"
    own = layers[len(base_layers) :]
    leaks = []
    for layer in own:
        for tar, member in layer_members(layer):
            name = member.name.lstrip("./")
            if name.startswith(("run/secrets/", "pip-local/")) or Path(name).name in ("pip.conf", "build-ca"):
                leaks.append(f"{layer.digest}: {name}")
            elif member.isfile() and ca_digest and member.size == ca_size:
                if hashlib.sha256(tar.extractfile(member).read()).hexdigest() == ca_digest:
                    leaks.append(f"{layer.digest}: {name} is the build host's CA bundle")
            elif member.isfile() and member.size < 1_000_000 and name.endswith((".conf", ".cfg", ".ini", ".txt")):
                if b"/pip-local/" in tar.extractfile(member).read():
                    leaks.append(f"{layer.digest}: {name} names the pip-local mount")
    metadata = json.dumps([images.inspect_history(engine, built.ref), images.inspect_image(engine, built.ref)])
    for host_dir, _ in config.local_dirs:
        if str(host_dir) in metadata:
            leaks.append(f"the image's history or config names {host_dir}")
    env = images.inspect_image(engine, built.ref).get("Env") or []
    leaks += [f"ENV {item}" for item in env if item.startswith(("PIP_CONFIG_FILE=", "PIP_CERT=", "PIP_INDEX_URL="))]
    return LayerScan(sum(layer.path.stat().st_size for layer in layers), len(own), leaks)
