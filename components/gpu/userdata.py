"""Bootstrap user data for self-managed GPU nodes (AL2023 nodeadm NodeConfig)."""

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


def node_config(
    cluster_name: str,
    endpoint: str,
    certificate_authority: str,
    service_cidr: str,
    labels: Mapping[str, str],
    taints: Sequence[Mapping[str, str]],
) -> dict:
    """nodeadm's NodeConfig: joins the cluster with the given labels and taints."""
    return {
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


def node_user_data(*args, **kwargs) -> str:
    """MIME multi-part user data carrying the NodeConfig (the form nodeadm reads)."""
    message = MIMEMultipart(boundary="//")
    part = MIMEText(yaml.safe_dump(node_config(*args, **kwargs), sort_keys=False), "plain")
    del part["Content-Type"]
    part["Content-Type"] = "application/node.eks.aws"
    message.attach(part)
    return message.as_string()
