"""The layer scan finds a leak when there is one: a small image that copies pip's configuration in."""

from __future__ import annotations

import subprocess
import sys

from platformctl import images

from .leaks import scan_layers


def test_the_scan_names_a_pip_conf_and_the_hosts_ca_bundle_copied_into_a_layer(engine, inference_image, tmp_path):
    config = images.pip_build_config(images.effective_pip_settings(sys.executable))
    context = tmp_path / "context"
    context.mkdir()
    (context / "pip.conf").write_text(config.conf)
    copies = ["COPY pip.conf /etc/pip.conf"]
    if config.ca_file is not None:
        (context / "ca.pem").write_bytes(config.ca_file.read_bytes())
        copies.append("COPY ca.pem /usr/local/share/build-ca.pem")
    (context / "Dockerfile").write_text(f"FROM {inference_image.base}\n" + "\n".join(copies) + "\n")
    ref = "localhost/platform/leak-scan-test:1"
    images._engine_build(engine, context, context / "Dockerfile", [ref], {}, secrets={}, contexts={})
    leaky = images.BuiltImage(images.IMAGES["inference"], (ref,), "", "", inference_image.base, ())
    try:
        scan = scan_layers(engine, leaky, tmp_path / "scan")
    finally:
        subprocess.run(
            ["docker", "rmi", ref] if engine == "docker" else [*images.BUILDAH, "rmi", ref], capture_output=True
        )
    assert any(leak.endswith(": etc/pip.conf") for leak in scan.leaks), scan.leaks
    if config.ca_file is not None:
        assert any("build host's CA bundle" in leak for leak in scan.leaks), scan.leaks
