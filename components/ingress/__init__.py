"""Entry to the model servers from outside the clusters (docs/ingress.md)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.config import PlatformConfig
from components.ingress.component import AlbEntry, AlbEntryArgs, NginxEntry, NginxEntryArgs
from components.tagging import TagContext


def expose_models(config: PlatformConfig, serving: dict[str, pulumi.Resource], version: str, tags: TagContext,
                  provider: aws.Provider, cluster, vpc_id: pulumi.Input[str], log_bucket: pulumi.Input[str],
                  private_cloud_provider: k8s.Provider | None) -> dict[str, str]:  # fmt: skip
    """An entry on each cluster that has deployments with ``expose: true``; their URLs by deployment."""
    entries, hosts = config.inference.ingress, {}
    exposed = {target: tuple(d for d in config.inference.on(target) if d.expose) for target in ("eks", "privateCloud")}
    if exposed["eks"] and entries.eks is not None:
        hosts |= AlbEntry("ingress-eks", AlbEntryArgs(
            config=entries.eks, inference=config.inference, deployments=exposed["eks"], version=version,
            region=config.aws.region, cluster_name=cluster.cluster_name, vpc_id=vpc_id,
            oidc_provider_arn=cluster.oidc_provider_arn, oidc_issuer=cluster.oidc_issuer, k8s_provider=cluster.k8s_provider,
            log_bucket=log_bucket, serving=serving["eks"]), tags=tags, provider=provider).hosts  # fmt: skip
    if exposed["privateCloud"] and entries.private_cloud is not None and private_cloud_provider is not None:
        secret = lambda value: value.get_secret_value() if value is not None else None  # noqa: E731
        hosts |= NginxEntry("ingress-private-cloud", NginxEntryArgs(
            config=entries.private_cloud, inference=config.inference, deployments=exposed["privateCloud"],
            version=version, k8s_provider=private_cloud_provider, serving=serving["privateCloud"],
            tls_certificate=secret(config.private_cloud_tls_certificate), tls_key=secret(config.private_cloud_tls_key)),
            tags=tags, provider=provider).hosts  # fmt: skip
    return hosts
