"""Bootstrap user data for self-managed GPU nodes (AL2023 nodeadm NodeConfig).

The hot tier: kubelet (pod volumes, so the model cache), containerd (images) and pod logs
live on node-local disks, never only on the system disk. ``instanceStore``: nodeadm stripes
the instance's NVMe disks (RAID0) and moves those directories there. ``ebs``: a gp3 data
volume, formatted and mounted by a script part before kubelet starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import yaml


def kubelet_flags(labels: Mapping[str, str], taints: Sequence[Mapping[str, str]]) -> list[str]:
    flags = ["--node-labels=" + ",".join(f"{key}={value}" for key, value in sorted(labels.items()))]
    if taints:
        flags.append(
            "--register-with-taints=" + ",".join(f"{t['key']}={t['value']}:{t['effect']}" for t in taints)
        )
    return flags


DATA_DEVICE = "/dev/xvdb"
DATA_MOUNT = "/mnt/data"
# What moves to the hot tier: the same set nodeadm moves onto a RAID0 of instance stores.
HOT_DIRECTORIES = ("/var/lib/kubelet", "/var/lib/containerd", "/var/log/pods")


def data_volume(size_gib: int, throughput_mibps: int, iops: int) -> dict[str, object]:
    """The gp3 data volume of the ``ebs`` hot tier (launch template block device)."""
    return {"device_name": DATA_DEVICE, "ebs": {
        "volume_size": size_gib, "volume_type": "gp3", "throughput": throughput_mibps, "iops": iops,
        "encrypted": "true", "delete_on_termination": "true"}}  # fmt: skip


def data_volume_script(device: str = DATA_DEVICE, mount: str = DATA_MOUNT,
                       directories: tuple[str, ...] = HOT_DIRECTORIES, fstab: str = "/etc/fstab") -> str:
    """Format (first boot only) and mount the data volume; bind the hot directories onto it.

    Idempotent (a reboot runs it again): no second format, no duplicate fstab lines. The
    parameters exist for the test that runs it on a loop device.
    """
    binds = "\n".join(
        f'mkdir -p "$mount{path}" {path}\n'
        f'mountpoint -q {path} || mount --bind "$mount{path}" {path}\n'
        f'grep -q " {path} " "$fstab" || echo "$mount{path} {path} none bind 0 0" >> "$fstab"'
        for path in directories
    )
    return f"""#!/bin/bash
# The hot tier on a gp3 data volume: kubelet, containerd and pod logs live there.
set -euo pipefail
device=$(readlink -f {device})
mount={mount}
fstab={fstab}
blkid "$device" >/dev/null 2>&1 || mkfs.xfs -q "$device"
mkdir -p "$mount"
mountpoint -q "$mount" || mount -o noatime "$device" "$mount"
grep -q " $mount " "$fstab" || echo "UUID=$(blkid -s UUID -o value "$device") $mount xfs noatime,nofail 0 2" >> "$fstab"
{binds}
"""


def node_config(
    cluster_name: str,
    endpoint: str,
    certificate_authority: str,
    service_cidr: str,
    labels: Mapping[str, str],
    taints: Sequence[Mapping[str, str]],
    hot_source: str = "instanceStore",
    kubelet_config: Mapping[str, object] | None = None,
) -> dict:
    """nodeadm's NodeConfig: joins the cluster with the given labels and taints, hot tier and log rotation."""
    config = {
        "apiVersion": "node.eks.aws/v1alpha1",
        "kind": "NodeConfig",
        "spec": {
            "cluster": {
                "name": cluster_name,
                "apiServerEndpoint": endpoint,
                "certificateAuthority": certificate_authority,
                "cidr": service_cidr,
            },
            "kubelet": {"flags": kubelet_flags(labels, taints)},
        },
    }
    if kubelet_config:
        config["spec"]["kubelet"]["config"] = dict(kubelet_config)
    if hot_source == "instanceStore":
        config["spec"]["instance"] = {"localStorage": {"strategy": "RAID0"}}
    return config


def node_user_data(*args, **kwargs) -> str:
    """MIME multi-part user data carrying the NodeConfig (the form nodeadm reads), and the data
    volume's script with the ``ebs`` hot tier."""
    message = MIMEMultipart(boundary="//")
    part = MIMEText(yaml.safe_dump(node_config(*args, **kwargs), sort_keys=False), "plain")
    del part["Content-Type"]
    part["Content-Type"] = "application/node.eks.aws"
    message.attach(part)
    if kwargs.get("hot_source") == "ebs":
        message.attach(MIMEText(data_volume_script(), "x-shellscript"))
    return message.as_string()
