"""The images' locks are the only source of what their code may import (no build needed)."""

from __future__ import annotations

from importlib.metadata import packages_distributions

import pytest
from packaging.utils import canonicalize_name

from ..conftest import ROOT
from .imports import external_modules, lock_of

RUNTIMES = {
    # package directory: the files whose pins the image installs
    "inference_image/src/inference_server": ("inference_image/requirements.txt", "inference_image/constraints.txt"),
    "components/mirror/runtime": ("components/mirror/requirements.txt", "components/mirror/constraints.txt"),
}


def _locked(files: tuple[str, ...]) -> dict[str, str]:
    locked: dict[str, str] = {}
    for name in files:
        locked |= lock_of((ROOT / name).read_text())
    return locked


def unlocked_imports(package_dir, locked: dict[str, str]) -> dict[str, str]:
    """module -> why it is not covered by the lock."""
    providers = packages_distributions()
    problems = {}
    for module in sorted(external_modules(package_dir)):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists:
            problems[module] = "no installed distribution provides it"
        elif not dists & locked.keys():
            problems[module] = f"provided by {', '.join(sorted(dists))}, which the image's lock does not hold"
    return problems


@pytest.mark.parametrize("package", sorted(RUNTIMES))
def test_every_module_the_runtime_imports_is_in_its_images_lock(package):
    locked = _locked(RUNTIMES[package])
    assert unlocked_imports(ROOT / package, locked) == {}


def test_the_check_catches_an_import_the_lock_lacks(tmp_path):
    """httpx was imported by the server while only the dev environment had it (issue #23)."""
    package = tmp_path / "server"
    package.mkdir()
    (package / "client.py").write_text("def fetch():\n    import httpx\n    return httpx\n")
    locked = lock_of("fastapi==0.165.0\n")
    assert set(unlocked_imports(package, locked)) == {"httpx"}
    assert unlocked_imports(package, lock_of("httpx==0.28.1\n")) == {}


def test_the_mirror_lock_covers_its_requirements():
    requirements = lock_of((ROOT / "components/mirror/requirements.txt").read_text())
    lock = lock_of((ROOT / "components/mirror/constraints.txt").read_text())
    assert requirements.items() <= lock.items()
