from __future__ import annotations

import os
import pwd
import subprocess

import pytest

from .lab import missing_tools


@pytest.fixture(scope="session")
def netns_tools() -> None:
    """The lab needs root and the Debian packages `make` installs; say so instead of skipping."""
    if os.geteuid() != 0:
        pytest.fail("the failover lab needs root (network namespaces); CI runs as root")
    missing = missing_tools()
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: `make` installs them as root (Makefile DEB_PACKAGES)")


@pytest.fixture(scope="session")
def script_user(netns_tools) -> str:
    """The unprivileged user keepalived runs scripts as, created as cloud-init does on a node."""
    name = "keepalived_script"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    return name
