"""EKS cluster: control plane, IRSA, pinned add-ons, access entries, system node group."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.base import PlatformComponent
from components.config import EksConfig
from components.eks.policies import kubeconfig, service_trust_policy
from components.tagging import TagContext

# Add-ons the nodes need in order to become Ready; the rest (CoreDNS) need Ready nodes.
ADDONS_BEFORE_NODES = frozenset({"vpc-cni", "kube-proxy", "eks-pod-identity-agent"})
SYSTEM_NODE_LABELS = {"node-role": "system"}
_MANAGED = "arn:aws:iam::aws:policy"
NODE_POLICIES = (
    f"{_MANAGED}/AmazonEKSWorkerNodePolicy",
    f"{_MANAGED}/AmazonEC2ContainerRegistryPullOnly",
    f"{_MANAGED}/AmazonEKS_CNI_Policy",
    f"{_MANAGED}/AmazonSSMManagedInstanceCore",  # SSM sessions instead of SSH
)


@dataclass(frozen=True)
class EksClusterArgs:
    config: EksConfig
    cluster_name: str
    region: str
    private_subnet_ids: pulumi.Input[list[str]]


def node_metadata_options() -> dict[str, object]:
    """IMDSv2 only, one hop: pods cannot borrow the node's role (they use IRSA)."""
    return {"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1}


def encrypted_root_volume(size_gib: int, device_name: str = "/dev/xvda") -> dict[str, object]:
    return {
        "device_name": device_name,
        "ebs": {"volume_size": size_gib, "volume_type": "gp3", "encrypted": "true", "delete_on_termination": "true"},
    }


class EksCluster(PlatformComponent):
    """``platform:eks:Cluster``.

    Outputs: ``cluster_name``, ``endpoint``, ``certificate_authority``, ``service_cidr``,
    ``cluster_security_group_id``, ``oidc_provider_arn``, ``oidc_issuer``,
    ``node_role_arn`` (system nodes) and ``k8s_provider`` for Kubernetes resources.
    """

    def __init__(
        self,
        name: str,
        args: EksClusterArgs,
        tags: TagContext,
        provider: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        config = args.config
        super().__init__("platform:eks:Cluster", name, "eks", tags, provider, opts)

        secrets_key = aws.kms.Key(
            self.child_name("secrets"),
            description=f"Envelope encryption of Kubernetes secrets in {args.cluster_name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=self.tags("secrets"),
            opts=self.child_opts(),
        )
        cluster_role = aws.iam.Role(
            self.child_name("cluster"),
            assume_role_policy=service_trust_policy("eks.amazonaws.com", ("sts:AssumeRole", "sts:TagSession")),
            tags=self.tags("cluster"),
            opts=self.child_opts(),
        )
        cluster_policy = aws.iam.RolePolicyAttachment(
            self.child_name("cluster-policy"),
            role=cluster_role.name,
            policy_arn=f"{_MANAGED}/AmazonEKSClusterPolicy",
            opts=self.child_opts(),
        )
        # Created here so its retention is ours; EKS would create it with no expiry.
        log_group = aws.cloudwatch.LogGroup(
            self.child_name("control-plane"),
            name=f"/aws/eks/{args.cluster_name}/cluster",
            retention_in_days=config.log_retention_days,
            tags=self.tags("control-plane-logs"),
            opts=self.child_opts(),
        )
        self.cluster = aws.eks.Cluster(
            self.child_name("cluster"),
            name=args.cluster_name,
            version=config.version,
            role_arn=cluster_role.arn,
            vpc_config={
                "subnet_ids": args.private_subnet_ids,
                "endpoint_private_access": True,
                "endpoint_public_access": config.endpoint_public_access,
                **({"public_access_cidrs": [str(c) for c in config.public_access_cidrs]}
                   if config.endpoint_public_access else {}),
            },  # fmt: skip
            access_config={"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True},
            encryption_config={"provider": {"key_arn": secrets_key.arn}, "resources": ["secrets"]},
            enabled_cluster_log_types=list(config.log_types),
            # Core add-ons are managed below, pinned, instead of EKS's unmanaged defaults.
            bootstrap_self_managed_addons=False,
            # Standard support only: extended support bills 6x per cluster hour.
            upgrade_policy={"support_type": "STANDARD"},
            tags=self.tags("cluster"),
            opts=self.child_opts(depends_on=[cluster_policy, log_group]),
        )

        issuer = self.cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer)
        self.oidc_provider = aws.iam.OpenIdConnectProvider(
            self.child_name("oidc"),
            url=issuer,
            client_id_lists=["sts.amazonaws.com"],
            tags=self.tags("oidc"),
            opts=self.child_opts(),
        )

        for index, role_arn in enumerate(config.admin_role_arns):
            entry = aws.eks.AccessEntry(
                self.child_name(f"admin-{index}"),
                cluster_name=self.cluster.name,
                principal_arn=role_arn,
                type="STANDARD",
                tags=self.tags(f"admin-{index}"),
                opts=self.child_opts(),
            )
            aws.eks.AccessPolicyAssociation(
                self.child_name(f"admin-{index}"),
                cluster_name=self.cluster.name,
                principal_arn=role_arn,
                policy_arn="arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
                access_scope={"type": "cluster"},
                opts=self.child_opts(depends_on=[entry]),
            )

        early_addons = [
            self._addon(addon, version)
            for addon, version in sorted(config.addons.items())
            if addon in ADDONS_BEFORE_NODES
        ]
        # Nodes join only once the CNI and kube-proxy exist; CoreDNS needs Ready nodes.
        system_nodes = self._system_nodes(config, args, depends_on=early_addons)
        for addon, version in sorted(config.addons.items()):
            if addon not in ADDONS_BEFORE_NODES:
                self._addon(addon, version, depends_on=[system_nodes])

        self.cluster_name = self.cluster.name
        self.endpoint = self.cluster.endpoint
        self.certificate_authority = self.cluster.certificate_authority.apply(lambda ca: ca.data)
        self.service_cidr = self.cluster.kubernetes_network_config.apply(lambda net: net.service_ipv4_cidr)
        self.cluster_security_group_id = self.cluster.vpc_config.apply(lambda vpc: vpc.cluster_security_group_id)
        self.oidc_provider_arn = self.oidc_provider.arn
        self.oidc_issuer = issuer
        self.k8s_provider = k8s.Provider(
            self.child_name("k8s"),
            kubeconfig=pulumi.Output.all(self.cluster.name, self.endpoint, self.certificate_authority).apply(
                lambda values: kubeconfig(values[0], values[1], values[2], args.region)
            ),
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[system_nodes]),
        )
        self.register_outputs(
            {
                "clusterName": self.cluster_name,
                "endpoint": self.endpoint,
                "oidcProviderArn": self.oidc_provider_arn,
                "clusterSecurityGroupId": self.cluster_security_group_id,
                "nodeRoleArn": self.node_role_arn,
                "capacityFacts": [self.system_capacity_facts],
            }
        )

    def _addon(self, addon: str, version: str, depends_on: list[pulumi.Resource] | None = None) -> aws.eks.Addon:
        return aws.eks.Addon(
            self.child_name(addon),
            cluster_name=self.cluster.name,
            addon_name=addon,
            addon_version=version,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=self.tags(addon),
            opts=self.child_opts(depends_on=depends_on or []),
        )

    def _system_nodes(
        self, config: EksConfig, args: EksClusterArgs, depends_on: list[pulumi.Resource]
    ) -> aws.eks.NodeGroup:
        nodes = config.system_nodes
        role = aws.iam.Role(
            self.child_name("system-nodes"),
            assume_role_policy=service_trust_policy("ec2.amazonaws.com"),
            tags=self.tags("system-nodes"),
            opts=self.child_opts(),
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                self.child_name(f"system-nodes-{arn.rsplit('/', 1)[-1]}"), role=role.name, policy_arn=arn,
                opts=self.child_opts(),
            )  # fmt: skip
            for arn in NODE_POLICIES
        ]
        template = aws.ec2.LaunchTemplate(
            self.child_name("system-nodes"),
            description="EKS system nodes: IMDSv2, encrypted gp3 root",
            metadata_options=node_metadata_options(),
            block_device_mappings=[encrypted_root_volume(nodes.disk_size_gib)],
            tag_specifications=[
                {"resource_type": kind, "tags": self.tags("system-node")} for kind in ("instance", "volume")
            ],
            update_default_version=True,
            tags=self.tags("system-nodes"),
            opts=self.child_opts(),
        )
        self.node_role_arn = role.arn
        self.system_capacity_facts = {
            "pool": "system",
            "market": "on-demand",
            "instanceTypes": list(nodes.instance_types),
            "minSize": nodes.min_size,
            "desiredSize": nodes.desired_size,
            "maxSize": nodes.max_size,
            "rootVolumeGib": nodes.disk_size_gib,
            "hoursPerMonth": 730,
        }
        return aws.eks.NodeGroup(
            self.child_name("system"),
            cluster_name=self.cluster.name,
            node_role_arn=role.arn,
            subnet_ids=args.private_subnet_ids,
            capacity_type="ON_DEMAND",
            ami_type="AL2023_x86_64_STANDARD",
            instance_types=list(nodes.instance_types),
            scaling_config={"min_size": nodes.min_size, "desired_size": nodes.desired_size, "max_size": nodes.max_size},
            update_config={"max_unavailable": 1},
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            labels=SYSTEM_NODE_LABELS,
            tags=self.tags("system-nodes"),
            # The cluster autoscaler owns desiredSize once the group exists.
            opts=self.child_opts(depends_on=[*attachments, *depends_on], ignore_changes=["scalingConfig.desiredSize"]),
        )
