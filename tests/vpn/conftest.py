from __future__ import annotations

import os

import pytest

from .lab import missing_tools


@pytest.fixture(scope="session")
def vpn_tools() -> None:
    """The lab needs root, /dev/net/tun and the Debian packages `make` installs; say so instead of skipping."""
    if os.geteuid() != 0:
        pytest.fail("the VPN lab needs root (network namespaces, TUN devices); CI runs as root")
    if not os.path.exists("/dev/net/tun"):
        pytest.fail("the VPN lab needs /dev/net/tun (strongSwan's userspace IPsec)")
    missing = missing_tools()
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: `make` installs them as root (Makefile DEB_PACKAGES)")
