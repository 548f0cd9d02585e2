"""moto plus the one EC2 behaviour the VIP mover relies on that moto lacks.

``AssignPrivateIpAddresses`` with ``AllowReassignment`` moves an address that another
interface holds (AWS removes it there); moto adds it to the new interface and leaves it
on the old one. This patch moves it, as AWS does, and can record each call's time.

Run as a script, it is the lab's EC2 endpoint: a moto server inside the lab's client
namespace, recording every assignment (monotonic time, interface, address) as JSON lines.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from moto.ec2.models.elastic_network_interfaces import NetworkInterfaceBackend

_original = NetworkInterfaceBackend.assign_private_ip_addresses


def _reassigning(record: Callable[[dict[str, Any]], None] | None):
    def assign(self, eni_id, private_ip_addresses=None, secondary_ips_count=None):
        for address in private_ip_addresses or []:
            for other in self.enis.values():
                if other.id != eni_id:
                    other.private_ip_addresses = [item for item in other.private_ip_addresses
                                                  if item.get("PrivateIpAddress") != address]  # fmt: skip
        if record is not None:
            record({"mono": time.monotonic(), "eni": eni_id, "addresses": list(private_ip_addresses or [])})
        return _original(self, eni_id, private_ip_addresses, secondary_ips_count)

    return assign


@contextmanager
def aws_reassignment(record: Callable[[dict[str, Any]], None] | None = None):
    NetworkInterfaceBackend.assign_private_ip_addresses = _reassigning(record)
    try:
        yield
    finally:
        NetworkInterfaceBackend.assign_private_ip_addresses = _original


def serve(host: str, port: int, calls_file: str) -> None:
    from moto.server import ThreadedMotoServer

    def record(call: dict[str, Any]) -> None:
        with open(calls_file, "a") as handle:
            handle.write(json.dumps(call) + "\n")

    NetworkInterfaceBackend.assign_private_ip_addresses = _reassigning(record)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
