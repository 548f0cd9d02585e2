"""The platform's stack configuration: every key typed, documented and defaulted here.

One pydantic model tree covers the whole ``platform:`` namespace. Each field of
:class:`PlatformConfig` is one top-level Pulumi config key (``platform:<field>``);
nested models are the keys' object values. ``__main__.py`` calls
:func:`load_platform_config` before it declares any resource, so a bad stack file
fails fast with a message that names the stack file, the key path, the value and
what is allowed.

The README's config reference and the ``config:`` block of ``Pulumi.yaml`` are
generated from (and tested against) these models, so the reference cannot drift from the code.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
from types import UnionType
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pulumi
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

NAMESPACE = "platform"

# Values CloudWatch Logs accepts for a log group's retention (PutRetentionPolicy).
CLOUDWATCH_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip

# AWS tag keys and values: letters, digits, spaces and _ . : / = + - @ (see the
# EC2 / Resource Groups Tagging API docs); keys up to 128, values up to 256 chars.
_TAG_TEXT = re.compile(r"^[\w .:/=+\-@]*$")


def cloudwatch_retention(value: int) -> int:
    if value not in CLOUDWATCH_RETENTION_DAYS:
        allowed = ", ".join(map(str, CLOUDWATCH_RETENTION_DAYS))
        raise ValueError(f"CloudWatch Logs accepts only these retention periods: {allowed}")
    return value


class SecretMarker:
    """Marks a field whose value must be stored as a Pulumi secret (``--secret``)."""

    def __repr__(self) -> str:  # shows up in generated docs
        return "secret"


SECRET = SecretMarker()
#: A config value that must be a Pulumi secret; plaintext in a stack file is an error.
Secret = Annotated[SecretStr, SECRET]


class ConfigModel(BaseModel):
    """Base for every config section: camelCase keys, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )


class AwsConfig(ConfigModel):
    """Where the AWS resources go."""

    region: str = Field(
        description="AWS region for every AWS resource of the stack (e.g. us-east-1).",
        pattern=r"^[a-z]{2}-[a-z]+-\d$",  # commercial partition (arn:aws:...) only
    )
    allowed_account_ids: list[Annotated[str, Field(pattern=r"^\d{12}$")]] = Field(
        default_factory=list,
        description=(
            "AWS account ids this stack may deploy into; the provider refuses any other "
            "account, so prod config can never be applied with dev credentials. Empty: any."
        ),
    )


class TagConfig(ConfigModel):
    """Cost-allocation and ownership tags carried by every taggable AWS resource."""

    cost_center: str = Field(
        description="Value of the `cost-center` tag; finance groups spend by it.",
        min_length=1,
        max_length=256,
    )
    owner: str = Field(
        description="Value of the `owner` tag: the team or address that answers for the stack.",
        min_length=1,
        max_length=256,
    )
    extra: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Additional tags added to every resource. May not redefine the standard keys "
            "(environment, component, cost-center, owner, stack, Name)."
        ),
    )

    @field_validator("cost_center", "owner")
    @classmethod
    def _tag_value_chars(cls, value: str) -> str:
        if not _TAG_TEXT.match(value):
            raise ValueError(
                "AWS tag values may contain only letters, digits, spaces and _ . : / = + - @"
            )
        return value

    @field_validator("extra")
    @classmethod
    def _extra_tags(cls, value: dict[str, str]) -> dict[str, str]:
        from components.tagging import STANDARD_TAG_KEYS  # local: tagging imports nothing from here

        for key, tag_value in value.items():
            if key in STANDARD_TAG_KEYS:
                raise ValueError(f"tag key {key!r} is set by the platform and may not be overridden")
            if not key or len(key) > 128 or key.lower().startswith("aws:") or not _TAG_TEXT.match(key):
                raise ValueError(
                    f"tag key {key!r} is not a valid AWS tag key (1-128 chars, no 'aws:' prefix, "
                    "letters, digits, spaces and _ . : / = + - @)"
                )
            if len(tag_value) > 256 or not _TAG_TEXT.match(tag_value):
                raise ValueError(f"tag {key!r} has a value AWS would reject: {tag_value!r}")
            # The load balancer controller reads its tags annotation as `k=v,...`, splitting each
            # pair at the first `=` and trimming spaces: such a key or value would arrive changed.
            if "=" in key:
                raise ValueError(f"tag key {key!r} contains '=': the load balancer's tags annotation can't carry it")
            if key != key.strip() or tag_value != tag_value.strip():
                raise ValueError(f"tag {key!r}: leading or trailing spaces would be trimmed on the load balancer")
        return value


class FlowLogConfig(ConfigModel):
    """VPC flow logs, delivered to a CloudWatch Logs group."""

    enabled: bool = Field(default=True, description="Record VPC flow logs.")
    traffic_type: Literal["ALL", "ACCEPT", "REJECT"] = Field(
        default="ALL", description="Which traffic the flow log records."
    )
    retention_days: int = Field(
        default=30,
        description=(
            "Days CloudWatch keeps flow-log records; one of the values CloudWatch accepts: "
            + ", ".join(map(str, CLOUDWATCH_RETENTION_DAYS))
            + "."
        ),
    )
    max_aggregation_interval: Literal[60, 600] = Field(
        default=600, description="Seconds over which a flow record aggregates packets (60 or 600)."
    )

    _retention_allowed = field_validator("retention_days")(lambda value: cloudwatch_retention(value))


class NetworkConfig(ConfigModel):
    """The VPC baseline every other component builds on."""

    vpc_cidr: ipaddress.IPv4Network = Field(
        default=ipaddress.IPv4Network("10.0.0.0/16"),
        description=(
            "IPv4 CIDR of the VPC, /16 to /24, inside RFC 1918 space. Must not overlap the "
            "private cloud's ranges once the VPN joins them."
        ),
    )
    availability_zones: list[str] = Field(
        default_factory=list,
        description=(
            "Availability zones the VPC spans, by name (e.g. us-east-1a). At least two: EKS "
            "needs subnets in two AZs. Name them explicitly because GPU instance types are "
            "not offered in every AZ. Default: the region's a and b zones."
        ),
    )
    private_subnet_prefix_length: int = Field(
        default=19,
        ge=16,
        le=28,
        description=(
            "Prefix length of each AZ's private subnet (nodes and pods; the VPC CNI gives "
            "every pod a VPC address, so these are large)."
        ),
    )
    public_subnet_prefix_length: int = Field(
        default=24,
        ge=16,
        le=28,
        description="Prefix length of each AZ's public subnet (load balancers and NAT gateways).",
    )
    nat_gateways: Literal["single", "perAz"] | None = Field(
        default=None,
        description=(
            "`single`: one NAT gateway shared by all AZs (cheap, one AZ's outage cuts egress "
            "everywhere). `perAz`: one per AZ. Default: `perAz` when `platform:ha` is true, "
            "else `single`."
        ),
    )
    interface_endpoints: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")]] = Field(
        default_factory=lambda: ["ecr.api", "ecr.dkr"],
        description=(
            "AWS services reached through interface VPC endpoints in the private subnets "
            "(service suffix after com.amazonaws.<region>.). ECR's two are needed so nodes "
            "pull images without NAT traffic charges."
        ),
    )
    az_slots: int = Field(
        default=4,
        ge=2,
        le=8,
        description=(
            "AZs each subnet tier reserves room for. AZs can be appended later up to this "
            "number without moving (and so replacing) any existing subnet. Changing it "
            "re-lays every subnet."
        ),
    )
    flow_logs: FlowLogConfig = Field(
        default_factory=FlowLogConfig, description="VPC flow logs to CloudWatch Logs."
    )

    def subnet_prefix_lengths(self) -> dict[str, int]:
        """Subnet tiers in allocation order, with each tier's prefix length."""
        return {"private": self.private_subnet_prefix_length, "public": self.public_subnet_prefix_length}

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_cidr_private(cls, value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not 16 <= value.prefixlen <= 24:
            raise ValueError(f"a VPC CIDR must be /16 to /24 (got /{value.prefixlen})")
        rfc1918 = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
        if not any(value.subnet_of(block) for block in rfc1918):
            raise ValueError("must lie inside RFC 1918 space (10/8, 172.16/12 or 192.168/16)")
        return value

    @field_validator("availability_zones")
    @classmethod
    def _unique_azs(cls, value: list[str]) -> list[str]:
        duplicates = sorted({az for az in value if value.count(az) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(duplicates)} more than once")
        return value

    @field_validator("interface_endpoints")
    @classmethod
    def _unique_endpoints(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a service more than once")
        return value


# NVIDIA GPU families on x86_64 (the accelerated AL2023 AMI is x86_64/nvidia). Not
# here on purpose: g4ad (AMD GPU), g5g (Graviton/arm64), inf*/trn* (not GPUs).
GPU_INSTANCE_FAMILIES = frozenset(
    {"g4dn", "g5", "g6", "g6e", "gr6", "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200"}
)
# Families whose instances have no NVMe instance store (the rest of GPU_INSTANCE_FAMILIES do).
GPU_FAMILIES_WITHOUT_INSTANCE_STORE = frozenset({"p3"})
EKS_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")


def _gpu_instance_type(value: str) -> str:
    family, dot, size = value.partition(".")
    if not dot or not size or family not in GPU_INSTANCE_FAMILIES:
        raise ValueError(
            f"{value} is not an NVIDIA GPU instance type; GPU pools take only the families "
            + ", ".join(sorted(GPU_INSTANCE_FAMILIES))
        )
    return value


GpuInstanceType = Annotated[str, AfterValidator(_gpu_instance_type)]


def _pinned_image(value: str) -> str:
    name = value.rsplit("/", 1)[-1]
    if "@sha256:" not in value and (":" not in name or name.endswith(":latest")):
        raise ValueError("must pin a version tag or digest (not :latest)")
    return value


PinnedImage = Annotated[str, AfterValidator(_pinned_image)]


def _gibibytes(quantity: str) -> float:
    """A Kubernetes memory/storage quantity (validated elsewhere: digits and Ki/Mi/Gi/Ti) in GiB."""
    units = {"Ki": 2**-20, "Mi": 2**-10, "Gi": 1, "Ti": 2**10}
    return float(quantity[:-2]) * units[quantity[-2:]]


def _check_sizes(min_size: int, desired_size: int, max_size: int) -> None:
    if min_size <= desired_size <= max_size:
        return
    rule = f"needs minSize <= desiredSize <= maxSize (got {min_size} <= {desired_size} <= {max_size})"
    if min_size > max_size:
        raise _CrossFieldErrors([(("minSize",), min_size, rule)])
    raise _CrossFieldErrors([(("desiredSize",), desired_size, rule)])


class NodeGroupSizeMixin(ConfigModel):
    min_size: int = Field(default=0, ge=0, le=1000, description="Fewest nodes the group scales to.")
    desired_size: int = Field(default=0, ge=0, le=1000, description="Nodes the group starts with.")
    max_size: int = Field(default=1, ge=1, le=1000, description="Most nodes the group scales to.")

    @model_validator(mode="after")
    def _ordered_sizes(self) -> NodeGroupSizeMixin:
        _check_sizes(self.min_size, self.desired_size, self.max_size)
        return self


class SystemNodesConfig(NodeGroupSizeMixin):
    """On-demand CPU nodes for cluster services (CoreDNS, controllers, device-plugin control)."""

    instance_types: list[str] = Field(
        default_factory=lambda: ["m7i.large"], min_length=1, description="Instance types of the system node group."
    )
    min_size: int = Field(default=2, ge=1, le=100, description="Fewest system nodes.")
    desired_size: int = Field(default=2, ge=1, le=100, description="System nodes at creation.")
    max_size: int = Field(default=4, ge=1, le=100, description="Most system nodes.")
    disk_size_gib: int = Field(default=50, ge=20, le=1000, description="Root volume size (GiB).")


class EksConfig(ConfigModel):
    """The EKS control plane and its system node group."""

    version: str = Field(
        default="1.33",
        description="Kubernetes version of the control plane and nodes (EKS `1.x`, at least 1.29).",
    )
    endpoint_public_access: bool = Field(
        default=False,
        description="Expose the API endpoint publicly (limited to publicAccessCidrs). False: private only.",
    )
    public_access_cidrs: list[ipaddress.IPv4Network] = Field(
        default_factory=list,
        description="Networks allowed to reach a public API endpoint; required when endpointPublicAccess is true.",
    )
    log_types: list[Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]] = Field(
        default_factory=lambda: list(EKS_LOG_TYPES), min_length=1, description="Control-plane logs sent to CloudWatch."
    )
    log_retention_days: int = Field(default=90, description="Days CloudWatch keeps control-plane logs.")
    admin_role_arns: list[Annotated[str, Field(pattern=r"^arn:aws:iam::\d{12}:role/[\w+=,.@/-]+$")]] = Field(
        default_factory=list,
        description="IAM roles given cluster-admin through EKS access entries (AmazonEKSClusterAdminPolicy).",
    )
    addons: dict[str, Annotated[str, Field(pattern=r"^v\d+\.\d+\.\d+-eksbuild\.\d+$")]] = Field(
        default_factory=lambda: {
            "vpc-cni": "v1.19.5-eksbuild.1",
            "coredns": "v1.12.1-eksbuild.2",
            "kube-proxy": "v1.33.0-eksbuild.2",
            "eks-pod-identity-agent": "v1.3.7-eksbuild.2",
        },
        description=(
            "Core add-ons and their pinned versions (must suit the cluster version: "
            "`aws eks describe-addon-versions --kubernetes-version <v>`)."
        ),
    )
    system_nodes: SystemNodesConfig = Field(
        default_factory=SystemNodesConfig, description="The on-demand CPU system node group."
    )

    @field_validator("version")
    @classmethod
    def _supported_version(cls, value: str) -> str:
        match = re.fullmatch(r"1\.(\d{2})", value)
        if not match or int(match.group(1)) < 29:
            raise ValueError("must be an EKS Kubernetes version written 1.NN, at least 1.29")
        return value

    _retention_allowed = field_validator("log_retention_days")(lambda value: cloudwatch_retention(value))

    @model_validator(mode="after")
    def _public_endpoint_needs_cidrs(self) -> EksConfig:
        if self.endpoint_public_access and not self.public_access_cidrs:
            raise _CrossFieldErrors(
                [(("publicAccessCidrs",), [], "must name the networks allowed in when endpointPublicAccess is true")]
            )
        for index, cidr in enumerate(self.public_access_cidrs):
            if cidr.prefixlen == 0:
                raise _CrossFieldErrors(
                    [(("publicAccessCidrs", index), str(cidr), "opens the API to the internet: name the networks")]
                )
        return self


class ReservedGpuConfig(ConfigModel):
    """The reserved GPU base: an On-Demand Capacity Reservation and the nodes that fill it."""

    count: int = Field(
        default=0, ge=0, le=256, description="Reserved GPU instances (the serving floor). 0: no reservation."
    )
    instance_type: GpuInstanceType = Field(default="g6.xlarge", description="Instance type reserved.")
    availability_zone: str | None = Field(
        default=None,
        description="AZ of the reservation (one of network.availabilityZones). Default: the first network AZ.",
    )
    max_size: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Most nodes of the reserved group; at least count. Default: count. Nodes beyond the "
            "reservation cannot launch (the launch template targets it), so extra room only helps "
            "if the reservation grows."
        ),
    )
    end_date: str | None = Field(
        default=None,
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
        description="When the reservation ends (RFC 3339, UTC). Default: unlimited, until cancelled.",
    )
    root_volume_gib: int = Field(default=200, ge=50, le=16384, description="Encrypted gp3 root volume (GiB).")

    @model_validator(mode="after")
    def _count_within_max(self) -> ReservedGpuConfig:
        if self.max_size is not None and self.count > self.max_size:
            raise _CrossFieldErrors([(("count",), self.count, f"must be <= maxSize ({self.max_size})")])
        return self

    @property
    def group_max_size(self) -> int:
        return self.count if self.max_size is None else self.max_size


class SpotGpuConfig(NodeGroupSizeMixin):
    """The spot GPU pool: burst capacity across several GPU types."""

    instance_types: list[GpuInstanceType] = Field(
        default_factory=lambda: ["g6.xlarge", "g5.xlarge", "g6e.xlarge", "g4dn.xlarge"],
        min_length=3,
        description=(
            "GPU instance types the pool may use, at least 3 so one type's shortage does not stop "
            "scaling; first is preferred when prices tie."
        ),
    )
    max_size: int = Field(default=4, ge=0, le=1000, description="Most spot GPU nodes.")
    root_volume_gib: int = Field(default=200, ge=50, le=16384, description="Encrypted gp3 root volume (GiB).")

    @field_validator("instance_types")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists an instance type more than once")
        return value


class GpuConfig(ConfigModel):
    """GPU capacity: the reserved base, the spot pool and what runs on every GPU node."""

    reserved: ReservedGpuConfig = Field(default_factory=ReservedGpuConfig, description="Reserved GPU base.")
    spot: SpotGpuConfig = Field(default_factory=SpotGpuConfig, description="Spot GPU pool.")
    device_plugin_image: PinnedImage = Field(
        default="nvcr.io/nvidia/k8s-device-plugin:v0.17.2",
        description="NVIDIA device plugin image, pinned by tag or digest.",
    )
    node_termination_handler_chart: str = Field(
        default="0.27.2",
        pattern=r"^\d+\.\d+\.\d+$",
        description="Version of the aws-node-termination-handler Helm chart (eks-charts), queue mode.",
    )


# --------------------------------------------------------------------------- image and serving

_DNS_LABEL = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$"
_QUANTITY_CPU = r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$"
_QUANTITY_MEMORY = r"^[0-9]+(Ki|Mi|Gi|Ti)$"


class ImageConfig(ConfigModel):
    """The inference image: ECR repository and the pulumi-docker-build build."""

    keep_versions: int = Field(
        default=20, ge=1, le=1000,
        description="Versions (`<version>` tags) ECR keeps; older ones expire by lifecycle policy.",
    )  # fmt: skip
    untagged_expiry_days: int = Field(
        default=7, ge=1, le=365, description="Days before untagged images (superseded pushes) expire."
    )
    build_on_preview: bool = Field(
        default=True,
        description=(
            "Build (never push) during `pulumi preview`, so a broken image fails the pull request's "
            "preview. Skipped anyway while the repository URL is still unknown."
        ),
    )
    source_url: str = Field(
        default="https://github.com/example/gpu-inference-platform",
        pattern=r"^https://",
        description="`org.opencontainers.image.source` label of the image.",
    )


class ServerSettingsConfig(ConfigModel):
    """inference-server settings a model deployment passes through its ConfigMap."""

    max_batch_size: int = Field(default=16, ge=1, le=256, description="Most requests per generate() batch.")
    max_wait_ms: float = Field(default=10.0, ge=0, le=1000, description="Longest a request waits for batch-mates.")
    max_queue: int = Field(default=128, ge=1, le=100000, description="Queued requests before 429.")
    max_input_tokens: int = Field(default=2048, ge=1, description="Longest accepted prompt (tokens).")
    max_new_tokens: int = Field(default=512, ge=1, description="Most tokens one request may generate.")
    request_timeout_seconds: float = Field(default=60.0, gt=0, le=3600, description="Per-request timeout (504).")
    grace_period_seconds: int = Field(
        default=30, ge=1, le=3600, description="Drain time after SIGTERM; the pod's grace period exceeds it."
    )
    quantize_int8: bool = Field(default=False, description="Dynamic int8 quantization (CPU variant only).")
    max_body_bytes: int = Field(
        default=1_000_000, ge=1024, le=100_000_000,
        description="Largest request body (413 above it); the WAF's body-size rule uses the same number.",
    )  # fmt: skip


class ReplicasConfig(ConfigModel):
    min: int = Field(default=2, ge=1, le=1000, description="Replicas the autoscaler never goes below.")
    max: int = Field(default=4, ge=1, le=1000, description="Replicas the autoscaler never exceeds.")
    min_available: int = Field(
        default=1, ge=0, le=1000,
        description="PodDisruptionBudget floor: replicas kept through voluntary disruptions (drains, upgrades).",
    )  # fmt: skip


class ResourcesConfig(ConfigModel):
    cpu: str = Field(default="4", pattern=_QUANTITY_CPU, description="CPU request and limit per replica.")
    memory: str = Field(default="16Gi", pattern=_QUANTITY_MEMORY, description="Memory request and limit per replica.")
    model_cache: str = Field(
        default="40Gi", pattern=_QUANTITY_MEMORY, description="Size limit of the writable model-cache volume."
    )


class CanaryStepConfig(ConfigModel):
    """One canary step: shift this share to the new version, then wait."""

    weight: int = Field(ge=1, le=100, description="Percent of traffic on the new version (of replicas, for a deployment no entry serves).")
    pause_seconds: int | None = Field(
        default=None, ge=0, le=86400,
        description="Seconds the step holds while the analysis runs. Null on a step before the last: wait for `kubectl argo rollouts promote`.",
    )  # fmt: skip


class CanaryAnalysisConfig(ConfigModel):
    """What the canary must show, from Prometheus, on the SLIs the alerts use; no default thresholds:
    each deployment states what it promises."""

    max_error_ratio: float = Field(gt=0, lt=1, description="Share of the canary's requests answered 5xx above which it fails.")
    max_p99_latency_seconds: float = Field(gt=0, le=600, description="P99 request latency of the canary above which it fails.")
    min_ready_ratio: float = Field(default=1.0, gt=0, le=1, description="Share of the canary's pods that must be ready.")
    interval_seconds: int = Field(default=60, ge=30, le=3600, description="Seconds between measurements (each over twice this window).")
    failure_limit: int = Field(default=1, ge=0, le=10, description="Failed measurements tolerated; one more aborts and rolls back.")


class CanaryConfig(ConfigModel):
    """Roll a new image version or model revision out as an Argo Rollouts canary (docs/rollouts.md)."""

    steps: list[CanaryStepConfig] = Field(min_length=1, max_length=20, description="Weights in increasing order, the last 100.")
    analysis: CanaryAnalysisConfig = Field(description="Required: a canary nobody measures is a slow full rollout.")

    @model_validator(mode="after")
    def _steps(self) -> CanaryConfig:
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        for index, (before, after) in enumerate(zip(self.steps, self.steps[1:]), start=1):
            if after.weight <= before.weight:
                problems.append((("steps", index, "weight"), after.weight, f"must exceed the step before ({before.weight})"))
        if self.steps[-1].weight != 100:
            problems.append((("steps", len(self.steps) - 1, "weight"), self.steps[-1].weight,
                             "the last step must reach 100: a canary that stops short never finishes"))  # fmt: skip
        if problems:
            raise _CrossFieldErrors(problems)
        return self


class ModelDeploymentConfig(ConfigModel):
    """One served model on one cluster."""

    name: str = Field(pattern=_DNS_LABEL, description="DNS label; names the Deployment, Service and friends.")
    target: Literal["eks", "privateCloud"] = Field(
        default="eks", description="Cluster: `eks` (this stack's EKS) or `privateCloud` (platform:privateCloud)."
    )
    demo: bool = Field(default=False, description="Serve the embedded offline demo model (no download).")
    model_id: str | None = Field(
        default=None, pattern=r"^[\w.-]+/[\w.-]+$", description="Hub model id, fetched through the mirror."
    )
    revision: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{40}$", description="Pinned 40-character commit of `modelId`."
    )
    variant: Literal["cpu", "cuda"] = Field(default="cuda", description="Image variant (and whether it needs GPUs).")
    gpus: int = Field(default=1, ge=0, le=8, description="`nvidia.com/gpu` per replica (cuda variant; 0 for cpu).")
    replicas: ReplicasConfig = Field(default_factory=ReplicasConfig, description="Autoscaling bounds and PDB floor.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="CPU, memory, cache volume.")
    server: ServerSettingsConfig = Field(default_factory=ServerSettingsConfig, description="Server settings.")
    expose: bool = Field(
        default=False, description="Serve it outside the cluster at <name>.<ingress domain> (inference.ingress)."
    )
    canary: CanaryConfig | None = Field(
        default=None,
        description="Roll each new image version or model revision out as an Argo Rollouts canary with analysis "
                    "(docs/rollouts.md). Null: a rolling update.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _consistent(self) -> ModelDeploymentConfig:
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        if self.demo == bool(self.model_id):
            problems.append((("modelId",), self.model_id, "set exactly one of demo: true or modelId (with revision)"))
        if self.model_id and not self.revision:
            problems.append((("revision",), None, "is required with modelId: pin a commit, a branch can move"))
        if self.revision and not self.model_id:
            problems.append((("revision",), self.revision, "only applies with modelId"))
        if self.variant == "cuda" and self.gpus < 1:
            problems.append((("gpus",), self.gpus, "must be at least 1 for the cuda variant"))
        if self.variant == "cpu" and self.gpus != 0:
            problems.append((("gpus",), self.gpus, "must be 0 for the cpu variant"))
        if self.variant == "cuda" and self.server.quantize_int8:
            problems.append((("server", "quantizeInt8"), True, "is CPU-only; the cuda variant runs fp16/bf16"))
        if self.replicas.min > self.replicas.max:
            problems.append((("replicas", "min"), self.replicas.min,
                             f"must not exceed replicas.max ({self.replicas.max})"))  # fmt: skip
        if self.replicas.min < self.replicas.min_available:
            problems.append((("replicas", "min"), self.replicas.min,
                             f"is below the PodDisruptionBudget floor replicas.minAvailable "
                             f"({self.replicas.min_available})"))  # fmt: skip
        elif self.replicas.min == self.replicas.min_available:
            problems.append((("replicas", "minAvailable"), self.replicas.min_available,
                             f"equals replicas.min ({self.replicas.min}): no voluntary disruption could proceed, "
                             "so node drains (spot interruptions, upgrades) would block"))  # fmt: skip
        if problems:
            raise _CrossFieldErrors(problems)
        return self


class InferenceAuthConfig(ConfigModel):
    algorithm: Literal["RS256", "HS256"] = Field(
        default="RS256",
        description="RS256 verifies with `publicKey`; HS256 with the secret key platform:inferenceJwtSecret.",
    )
    audience: str = Field(default="inference-api", min_length=1, description="Required `aud` claim.")
    issuer: str = Field(min_length=1, description="Required `iss` claim (the identity provider's issuer URL).")
    public_key: str | None = Field(
        default=None, description="PEM public key for RS256 (public, so plain config)."
    )


# ALB listener policies that negotiate TLS 1.3 and refuse TLS 1.0/1.1 (AWS's "TLS13" family).
TLS13_SSL_POLICIES = (
    "ELBSecurityPolicy-TLS13-1-2-2021-06", "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06", "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06", "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04",
    "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04",
)  # fmt: skip
_HOSTNAME = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.){1,8}[a-z]{2,63}$"


class WafConfig(ConfigModel):
    """The WAFv2 web ACL in front of the EKS load balancer."""

    rate_limit_per_5_minutes: int = Field(
        default=2000, ge=10, le=2_000_000_000, description="Requests one client IP may send in 5 minutes before it is blocked."
    )
    managed_rule_groups: list[Annotated[str, Field(pattern=r"^AWSManagedRules[A-Za-z0-9]+$")]] = Field(
        default_factory=lambda: ["AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet",
                                 "AWSManagedRulesAmazonIpReputationList"],
        min_length=1, description="AWS managed rule groups, in priority order.",
    )  # fmt: skip
    count_only_rules: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")]] = Field(
        default_factory=lambda: ["SizeRestrictions_BODY"],
        description="Managed rules that only count: SizeRestrictions_BODY blocks bodies over 8 KB, i.e. long prompts; "
                    "the body-size rule enforces the server's own limit instead.",
    )  # fmt: skip


class EksIngressConfig(ConfigModel):
    """The public (or internal) entry to the EKS model servers: one ALB, TLS 1.3, WAF."""

    domain: str = Field(pattern=_HOSTNAME, description="Each exposed deployment is served at <deployment>.<domain>.")
    scheme: Literal["internet-facing", "internal"] = Field(
        default="internet-facing", description="Internet-facing (public subnets) or internal (private subnets)."
    )
    hosted_zone_id: str | None = Field(
        default=None, pattern=r"^Z[A-Z0-9]{4,31}$",
        description="Route 53 zone of `domain`: validates the certificate and points each host at the ALB.",
    )  # fmt: skip
    certificate_arn: str | None = Field(
        default=None, pattern=r"^arn:aws:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$",
        description="An existing ACM certificate for *.<domain>; default: a new one, DNS-validated.",
    )  # fmt: skip
    ssl_policy: Literal[TLS13_SSL_POLICIES] = Field(  # type: ignore[valid-type]
        default="ELBSecurityPolicy-TLS13-1-2-2021-06", description="HTTPS listener policy: TLS 1.3, no TLS 1.0/1.1."
    )
    idle_timeout_seconds: int = Field(
        default=300, ge=60, le=4000,
        description="ALB idle timeout; at least each exposed deployment's server.requestTimeoutSeconds (streams).",
    )  # fmt: skip
    inbound_cidrs: list[ipaddress.IPv4Network] = Field(
        default_factory=lambda: [ipaddress.IPv4Network("0.0.0.0/0")], min_length=1,
        description="Who may reach the load balancer (its security group).",
    )  # fmt: skip
    controller_chart_version: str = Field(
        default="1.8.2", pattern=r"^\d+\.\d+\.\d+$",
        description="aws-load-balancer-controller chart (its IAM policy is vendored for the matching app version).",
    )  # fmt: skip
    waf: WafConfig = Field(default_factory=WafConfig, description="WAFv2 web ACL on the load balancer.")


class PrivateIngressConfig(ConfigModel):
    """The private cloud's entry: ingress-nginx with TLS 1.3 only."""

    domain: str = Field(pattern=_HOSTNAME, description="Each exposed deployment is served at <deployment>.<domain>.")
    chart_version: str = Field(default="4.12.1", pattern=r"^\d+\.\d+\.\d+$", description="ingress-nginx chart version.")
    class_name: str = Field(default="nginx", pattern=_DNS_LABEL, description="IngressClass of this controller.")
    cert_manager_issuer: str | None = Field(
        default=None, pattern=_DNS_LABEL,
        description="cert-manager ClusterIssuer for the hosts; default: the certificate in "
                    "platform:privateCloudTlsCertificate and platform:privateCloudTlsKey (secrets).",
    )  # fmt: skip
    trusted_proxy_cidrs: list[ipaddress.IPv4Network] = Field(
        default_factory=list,
        description="Load balancers in front of ingress-nginx whose X-Forwarded-For is trusted (the client IP).",
    )


class IngressConfig(ConfigModel):
    eks: EksIngressConfig | None = Field(default=None, description="Entry to EKS deployments with expose: true.")
    private_cloud: PrivateIngressConfig | None = Field(
        default=None, description="Entry to private-cloud deployments with expose: true."
    )


class TenantLimitConfig(ConfigModel):
    requests_per_minute: int = Field(ge=1, le=1_000_000, description="Sustained requests per minute, per replica.")
    burst: int = Field(ge=1, le=100_000, description="Requests a tenant may send at once after being idle.")


class TenantLimitsConfig(ConfigModel):
    """Per-tenant request quotas, enforced by each model server (token bucket per tenant)."""

    claim: str = Field(default="sub", pattern=r"^[A-Za-z_][\w.:-]{0,63}$", description="JWT claim naming the tenant.")
    requests_per_minute: int = Field(
        default=600, ge=1, le=1_000_000, description="Each tenant's sustained requests per minute, per server replica."
    )
    burst: int = Field(default=60, ge=1, le=100_000, description="Each tenant's burst (bucket size), per server replica.")
    overrides: dict[Annotated[str, Field(min_length=1, max_length=256)], TenantLimitConfig] = Field(
        default_factory=dict, description="Limits of named tenants (claim value -> limits)."
    )


class RolloutsConfig(ConfigModel):
    """The Argo Rollouts controller, installed on each cluster where a deployment has a canary."""

    chart_version: str = Field(default="2.40.1", pattern=r"^\d+\.\d+\.\d+$", description="argo-rollouts Helm chart (argo-helm).")
    namespace: str = Field(default="argo-rollouts", pattern=_DNS_LABEL, description="Namespace of the controller.")
    private_cloud_prometheus_url: str | None = Field(
        default=None, pattern=r"^https?://",
        description="Prometheus the private cloud's canaries are analysed with (required with a canary there); "
                    "EKS uses the platform's own (prometheus-operated in inference.prometheusNamespace).",
    )  # fmt: skip


class InferenceConfig(ConfigModel):
    """Model deployments to Kubernetes (EKS and the private cloud), and what they share."""

    namespace: str = Field(default="inference", pattern=_DNS_LABEL, description="Namespace of the model servers.")
    ingress_namespace: str = Field(
        default="ingress", pattern=_DNS_LABEL, description="Namespace of the ingress/gateway allowed to call them."
    )
    prometheus_namespace: str = Field(
        default="monitoring", pattern=_DNS_LABEL, description="Namespace of the Prometheus allowed to scrape them."
    )
    service_monitor: bool = Field(
        default=True, description="Declare a prometheus-operator ServiceMonitor (needs its CRDs in the cluster)."
    )
    metrics_adapter: bool = Field(
        default=False,
        description="A metrics adapter serves `inference_queue_depth` as a pods metric: the HPA scales on it too.",
    )
    queue_depth_target: int = Field(default=8, ge=1, description="Average queued requests per pod the HPA aims at.")
    hf_endpoint: str | None = Field(
        default=None, pattern=r"^https?://", description="Model mirror URL given to servers as HF_ENDPOINT."
    )
    mirror_public_key: str | None = Field(
        default=None, pattern=r"^-----BEGIN PUBLIC KEY-----",
        description="PEM public key of the mirror's manifest signer, when the mirror is another stack's "
                    "(this stack's platform:mirror key is used otherwise): servers verify every download through it.",
    )  # fmt: skip
    mirror_bucket: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="S3 bucket of the model mirror; EKS servers get read access through IRSA.",
    )  # fmt: skip
    egress_cidrs: list[ipaddress.IPv4Network] = Field(
        default_factory=list,
        description="Extra HTTPS egress for EKS servers (the mirror's addresses); the VPC (endpoints) is always allowed.",
    )
    auth: InferenceAuthConfig | None = Field(default=None, description="JWT verification (required with deployments).")
    tenant_limits: TenantLimitsConfig = Field(
        default_factory=TenantLimitsConfig, description="Per-tenant quotas (from the JWT), enforced by every server."
    )
    ingress: IngressConfig = Field(default_factory=IngressConfig, description="TLS entry from outside the clusters.")
    deployments: list[ModelDeploymentConfig] = Field(
        default_factory=list, description="Which models run where, how many, which image variant."
    )
    rollouts: RolloutsConfig = Field(default_factory=RolloutsConfig, description="Argo Rollouts, for deployments with a canary.")

    def on(self, target: str) -> tuple[ModelDeploymentConfig, ...]:
        return tuple(d for d in self.deployments if d.target == target)

    @property
    def variants(self) -> tuple[str, ...]:
        """Image variants the deployments use: each is built once."""
        return tuple(sorted({d.variant for d in self.deployments}))

    @model_validator(mode="after")
    def _consistent(self) -> InferenceConfig:
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        seen: dict[tuple[str, str], int] = {}
        for index, deployment in enumerate(self.deployments):
            key = (deployment.target, deployment.name)
            if key in seen:
                problems.append((("deployments", index, "name"), deployment.name,
                                 f"is already used by deployments[{seen[key]}] on {deployment.target}"))  # fmt: skip
            seen.setdefault(key, index)
            entry = self.ingress.eks if deployment.target == "eks" else self.ingress.private_cloud
            if deployment.expose and entry is None:
                key = "eks" if deployment.target == "eks" else "privateCloud"
                problems.append((("deployments", index, "expose"), True,
                                 f"needs inference.ingress.{key} (domain, certificate) on {deployment.target}"))  # fmt: skip
            if deployment.expose and deployment.target == "eks" and self.ingress.eks is not None and (
                    deployment.server.request_timeout_seconds > self.ingress.eks.idle_timeout_seconds):
                problems.append((("ingress", "eks", "idleTimeoutSeconds"), self.ingress.eks.idle_timeout_seconds,
                                 f"is shorter than deployments[{index}].server.requestTimeoutSeconds "
                                 f"({deployment.server.request_timeout_seconds:g}): the ALB would cut streams"))  # fmt: skip
            if deployment.canary is not None and deployment.target == "privateCloud" and not self.rollouts.private_cloud_prometheus_url:
                problems.append((("rollouts", "privateCloudPrometheusUrl"), None,
                                 f"is required: deployments[{index}] analyses its canary on the private cloud"))  # fmt: skip
            if deployment.canary is not None and not self.service_monitor:
                problems.append((("serviceMonitor",), False,
                                 f"must be true: deployments[{index}]'s canary analysis reads what it scrapes"))  # fmt: skip
            if deployment.model_id and not self.hf_endpoint:
                problems.append((("hfEndpoint",), None,
                                 f"is required: deployments[{index}] downloads {deployment.model_id} through the mirror"))  # fmt: skip
        if self.deployments and self.auth is None:
            problems.append((("auth",), None, "is required when models are deployed (issuer, audience, key)"))
        if self.auth is not None and self.auth.algorithm == "RS256" and not self.auth.public_key:
            problems.append((("auth", "publicKey"), None, "is required for RS256"))
        if problems:
            raise _CrossFieldErrors(problems)
        return self


class PrivateCloudConfig(ConfigModel):
    """The on-premises Kubernetes cluster models that must stay on premises deploy to."""

    kubeconfig: Secret = Field(description="Kubeconfig of the private cluster (a Pulumi secret).")
    kubernetes_version: str = Field(
        default="1.33", pattern=r"^1\.\d+$", description="Its Kubernetes minor version (manifests are validated for it)."
    )
    gpu: bool = Field(default=False, description="Whether it has NVIDIA GPU nodes (device plugin, nvidia.com/gpu).")
    gpu_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"},
        description="Node labels GPU pods require there (GPU Feature Discovery's label by default).",
    )
    image_pull_secret: str | None = Field(
        default=None, pattern=_DNS_LABEL,
        description="Pull secret for ECR in the inference namespace (kept fresh by an on-prem credential helper).",
    )  # fmt: skip
    egress_cidrs: list[ipaddress.IPv4Network] = Field(
        default_factory=list, description="HTTPS egress the servers there need (the mirror's addresses)."
    )


# --------------------------------------------------------------------------- model mirror


class MirrorRepoConfig(ConfigModel):
    repo: str = Field(pattern=r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$", description="Hub repo id ORG/NAME.")
    revision: str = Field(
        default="main", pattern=r"^[\w][\w.-]{0,127}$",
        description="Branch, tag or commit to mirror; a branch follows upstream at each sync.",
    )  # fmt: skip


class GeoRestrictionConfig(ConfigModel):
    restriction_type: Literal["none", "whitelist", "blacklist"] = Field(
        default="none", description="CloudFront geo restriction."
    )
    locations: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = Field(
        default_factory=list, description="ISO 3166-1 alpha-2 country codes the restriction lists."
    )

    @model_validator(mode="after")
    def _locations_match_type(self) -> GeoRestrictionConfig:
        if (self.restriction_type == "none") != (not self.locations):
            raise _CrossFieldErrors([(("locations",), self.locations,
                                      "must be empty for restrictionType none and non-empty otherwise")])  # fmt: skip
        return self


class PrivateCloudMirrorConfig(ConfigModel):
    """The private cloud's own mirror: on-prem object storage, synced from the AWS mirror over the VPN."""

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", description="Bucket on the on-prem store.")
    s3_endpoint: str = Field(pattern=r"^https?://", description="S3-compatible endpoint (AWS_ENDPOINT_URL_S3).")
    credentials_secret: str = Field(
        pattern=_DNS_LABEL,
        description="Existing Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) for that store, managed on premises.",
    )
    replicas: int = Field(default=2, ge=1, le=20, description="Mirror app replicas.")


def _cron(value: str) -> str:
    fields = value.split()
    if len(fields) != 5 or not all(re.fullmatch(r"[\d*/,-]+", f) for f in fields):
        raise ValueError("must be a 5-field cron expression (minute hour day month weekday), e.g. '17 3 * * *'")
    return value


class MirrorConfig(ConfigModel):
    """The model mirror: S3 storage, CloudFront edge, Lambda origin, scheduled sync."""

    domain_name: str = Field(
        pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
        description="Host name clients use as HF_ENDPOINT (https://<domainName>); a CNAME to the distribution.",
    )
    certificate_arn: str = Field(
        pattern=r"^arn:aws:acm:us-east-1:\d{12}:certificate/[\w-]+$",
        description="ACM certificate for domainName, in us-east-1 (CloudFront's requirement).",
    )
    price_class: Literal["PriceClass_100", "PriceClass_200", "PriceClass_All"] = Field(
        default="PriceClass_100", description="CloudFront price class (edge locations used)."
    )
    geo_restriction: GeoRestrictionConfig = Field(default_factory=GeoRestrictionConfig, description="Who may download.")
    upstream: str = Field(default="https://huggingface.co", pattern=r"^https?://", description="Where syncs pull from.")
    repos: list[MirrorRepoConfig] = Field(default_factory=list, description="Repos and revisions the schedule syncs.")
    schedule: Annotated[str, AfterValidator(_cron)] = Field(
        default="17 3 * * *", description="When the sync runs (cron, UTC): daily by default."
    )
    sync_workers: int = Field(default=4, ge=1, le=32, description="Files a sync transfers at once.")
    log_retention_days: int = Field(default=90, ge=1, le=3650, description="Days CloudFront access logs are kept.")
    origin_memory_mb: int = Field(default=1024, ge=256, le=10240, description="Memory of the Lambda origin.")
    private_cloud: PrivateCloudMirrorConfig | None = Field(
        default=None, description="Also run a mirror in the private cloud (needs platform:privateCloud)."
    )

    @field_validator("repos")
    @classmethod
    def _distinct_repos(cls, value: list[MirrorRepoConfig]) -> list[MirrorRepoConfig]:
        seen = [(r.repo, r.revision) for r in value]
        if len(set(seen)) != len(seen):
            raise ValueError("lists a repo and revision more than once")
        return value


# --------------------------------------------------------------------------- alerting


_EMAIL = r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$"


class SeverityTargetsConfig(ConfigModel):
    """Who a severity's SNS topic notifies, besides alerting.emails."""

    emails: list[Annotated[str, Field(pattern=_EMAIL)]] = Field(default_factory=list, description="Email subscribers.")
    https_endpoints: list[Annotated[str, Field(pattern=r"^https://")]] = Field(
        default_factory=list, description="HTTPS subscribers (e.g. a paging service's SNS integration URL)."
    )


class AlertWebhookConfig(ConfigModel):
    """An Alertmanager webhook receiver."""

    name: str = Field(pattern=_DNS_LABEL, description="Receiver name.")
    url: str = Field(pattern=r"^https://", description="Where Alertmanager POSTs (HTTPS).")
    severities: list[Literal["critical", "warning"]] = Field(
        default_factory=lambda: ["critical", "warning"], min_length=1, description="Which severities it receives."
    )


class BudgetThresholdConfig(ConfigModel):
    """A budget threshold that reaches the on-call topics (finance's own are cost.*Thresholds)."""

    percent: int = Field(ge=1, le=1000, description="Percent of cost.monthlyBudgetUsd.")
    spend: Literal["actual", "forecasted"] = Field(
        default="actual", description="Spend so far this month, or AWS's forecast for the month."
    )
    severity: Literal["critical", "warning"] = Field(
        default="warning", description="Which alert topic: critical pages, warning opens a ticket."
    )


class SloConfig(ConfigModel):
    """The inference service level objectives the burn-rate alerts defend."""

    availability: float = Field(default=0.999, ge=0.9, lt=1, description="Share of requests answered without a 5xx.")
    latency_seconds: float = Field(
        default=0.5, description="Latency bound of the latency objective; one of the server's histogram buckets."
    )
    latency_objective: float = Field(default=0.99, ge=0.9, lt=1, description="Share of requests faster than latencySeconds.")

    @field_validator("latency_seconds")
    @classmethod
    def _a_bucket(cls, value: float) -> float:
        buckets = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)  # inference_server/metrics.py
        if value not in buckets:
            raise ValueError(f"must be a bucket of inference_request_duration_seconds: {', '.join(f'{b:g}' for b in buckets)}")
        return value


class AlertThresholdsConfig(ConfigModel):
    """Thresholds of the non-SLO alerts (the seeds' numbers by default)."""

    node_cpu_percent: int = Field(default=85, ge=1, le=100, description="Node CPU busy for 5 minutes.")
    node_memory_percent: int = Field(default=80, ge=1, le=100, description="Node memory in use for 10 minutes.")
    node_free_memory_mb: int = Field(default=500, ge=1, description="Node available memory (critical below).")
    volume_drop_percent: int = Field(default=30, ge=1, le=100, description="Request volume drop vs the same hour yesterday.")
    volume_floor_per_hour: int = Field(
        default=100, ge=0, description="Yesterday's hourly requests below which a drop is not alerted (quiet hours)."
    )
    time_to_first_token_seconds: float = Field(default=2.0, gt=0, description="P95 time to first token.")
    queue_depth: int = Field(default=16, ge=1, description="Requests waiting on one server for 10 minutes.")
    shed_ratio: float = Field(default=0.01, gt=0, lt=1, description="Share of requests refused with 429 for 10 minutes.")
    restarts_per_30m: int = Field(default=3, ge=1, description="Container restarts in 30 minutes.")
    gpu_memory_percent: int = Field(default=90, ge=1, le=100, description="GPU memory in use for 15 minutes.")
    gpu_idle_percent: int = Field(default=10, ge=1, le=100, description="GPU utilisation averaged over two hours.")
    mirror_stale_hours: int = Field(default=26, ge=1, description="Hours since the last successful mirror sync.")
    spot_interruptions_per_hour: int = Field(default=4, ge=1, description="Spot interruption notices in an hour (CloudWatch).")


class PrometheusStackConfig(ConfigModel):
    """kube-prometheus-stack on EKS: Prometheus, Alertmanager, Grafana, node-exporter, kube-state-metrics."""

    chart_version: str = Field(default="76.5.1", pattern=r"^\d+\.\d+\.\d+$", description="kube-prometheus-stack chart version.")
    release: str = Field(default="kube-prometheus-stack", pattern=_DNS_LABEL, description="Helm release name.")
    retention: str = Field(default="15d", pattern=r"^\d+[dhw]$", description="How long Prometheus keeps samples.")
    dcgm_chart_version: str = Field(
        default="3.5.0", pattern=r"^\d+\.\d+\.\d+$", description="NVIDIA dcgm-exporter chart version (GPU metrics)."
    )
    cloudwatch_exporter_chart_version: str = Field(
        default="0.38.0", pattern=r"^\d+\.\d+\.\d+$",
        description="yet-another-cloudwatch-exporter chart version (failover and VPN series from CloudWatch).",
    )


class AlertingConfig(ConfigModel):
    """Where alarms go, the inference SLOs, alert thresholds and the Prometheus stack."""

    emails: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")]] = Field(
        default_factory=list, description="Addresses subscribed to both alert topics, page and ticket (each confirms by email)."
    )
    page: SeverityTargetsConfig = Field(
        default_factory=lambda: SeverityTargetsConfig(), description="Extra subscribers of the page topic (critical alerts)."
    )
    ticket: SeverityTargetsConfig = Field(
        default_factory=lambda: SeverityTargetsConfig(), description="Extra subscribers of the ticket topic (warnings)."
    )
    webhooks: list[AlertWebhookConfig] = Field(
        default_factory=list, description="Alertmanager webhook receivers (e.g. a chat bridge), per severity."
    )
    slo: SloConfig = Field(default_factory=SloConfig, description="Inference service level objectives.")
    thresholds: AlertThresholdsConfig = Field(default_factory=AlertThresholdsConfig, description="Alert thresholds.")
    prometheus: PrometheusStackConfig = Field(default_factory=PrometheusStackConfig, description="The Prometheus stack.")
    runbook_base_url: str = Field(
        default="https://github.com/example/gpu-inference-platform/blob/main/docs/runbooks",
        pattern=r"^https?://", description="Where each alert's runbook (<alert>.md, docs/runbooks/) is served.",
    )  # fmt: skip
    budget_thresholds: list[BudgetThresholdConfig] = Field(
        default_factory=lambda: [BudgetThresholdConfig(percent=100), BudgetThresholdConfig(percent=150, severity="critical")],
        max_length=5,  # AWS Budgets: 5 notifications per budget
        description="Spend that reaches the alert topics, through a second budget beside finance's (needs platform:cost).",
    )  # fmt: skip

    @field_validator("budget_thresholds")
    @classmethod
    def _one_notification_each(cls, value: list[BudgetThresholdConfig]) -> list[BudgetThresholdConfig]:
        seen = [(threshold.spend, threshold.percent) for threshold in value]
        if len(set(seen)) != len(seen):
            raise ValueError("lists the same spend and percent twice (AWS Budgets allows one notification for each)")
        return value


# --------------------------------------------------------------------------- failover pair


class VrrpConfig(ConfigModel):
    """Keepalived timing and health checks (measured choices: docs/failover.md)."""

    version: Literal[2, 3] = Field(
        default=3, description="VRRP version; 3 (RFC 5798) allows sub-second advertisements, 2 whole seconds only."
    )
    advert_interval: float = Field(
        default=0.1, ge=0.01, le=255,
        description="Seconds between advertisements; the backup takes over after about 3× this (plus skew).",
    )  # fmt: skip
    virtual_router_id: int = Field(default=51, ge=1, le=255, description="VRID, unique among the pairs on a network.")
    health_interval_seconds: int = Field(
        default=1, ge=1, le=60, description="Seconds between health checks of the protected service (whole seconds)."
    )
    health_fall: int = Field(default=2, ge=1, le=10, description="Failed checks in a row before a node gives up the VIP.")
    health_rise: int = Field(default=2, ge=1, le=10, description="Passed checks in a row before a node may hold the VIP.")
    script_user: str = Field(
        default="keepalived_script", pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description="Unprivileged user keepalived runs the check and notify scripts as.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _interval_fits_version(self) -> VrrpConfig:
        if self.version == 2 and (self.advert_interval < 1 or self.advert_interval != int(self.advert_interval)):
            raise _CrossFieldErrors([(("advertInterval",), self.advert_interval,
                                      "must be whole seconds (≥ 1) with VRRP version 2; use version 3 for sub-second")])  # fmt: skip
        if self.version == 3 and round(self.advert_interval * 100) != self.advert_interval * 100:
            raise _CrossFieldErrors([(("advertInterval",), self.advert_interval,
                                      "VRRP version 3 counts in centiseconds: use at most 2 decimals")])  # fmt: skip
        if self.version == 3 and self.advert_interval > 40.95:
            raise _CrossFieldErrors([(("advertInterval",), self.advert_interval, "VRRP version 3 allows at most 40.95 s")])
        return self


class RedisConfig(ConfigModel):
    """The protected service: Redis primary/replica (the applications' session and conversation store)."""

    port: int = Field(default=6379, ge=1024, le=65535, description="Port clients and the replica use.")
    max_memory_mb: int | None = Field(
        default=None, ge=64, description="maxmemory; unset leaves 75 % of the instance's memory to Redis."
    )
    appendfsync: Literal["everysec", "always"] = Field(
        default="everysec", description="AOF fsync policy (AOF is always on)."
    )
    lag_alarm_seconds: float = Field(default=5, gt=0, le=300, description="Replication lag that raises the alarm.")


class OnPremFailoverConfig(ConfigModel):
    """The same pair on premises: plain L2 VIP, no AWS calls (``platformctl failover render``)."""

    interface: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$", description="Interface the VIP and VRRP use.")
    node_addresses: list[ipaddress.IPv4Address] = Field(
        min_length=2, max_length=2, description="Node a's and node b's addresses on that interface."
    )
    vip: ipaddress.IPv4Interface = Field(description="The VIP with its prefix length, e.g. 10.50.0.12/24.")
    redis_process: str = Field(default="redis-server", description="Redis's process name there (for diagnostics).")

    @model_validator(mode="after")
    def _one_subnet(self) -> OnPremFailoverConfig:
        problems = []
        if self.node_addresses[0] == self.node_addresses[1]:
            problems.append((("nodeAddresses",), [str(a) for a in self.node_addresses], "must be two different addresses"))
        for index, address in enumerate(self.node_addresses):
            if address not in self.vip.network:
                problems.append((("nodeAddresses", index), str(address), f"is not in the VIP's subnet {self.vip.network}"))
        if self.vip.ip in self.node_addresses:
            problems.append((("vip",), str(self.vip), "must differ from both node addresses"))
        if problems:
            raise _CrossFieldErrors(problems)
        return self


class FailoverConfig(ConfigModel):
    """A Keepalived failover pair protecting Redis, with a VIP clients use (docs/failover.md)."""

    vip_mode: Literal["secondaryIp", "elasticIp"] = Field(
        default="secondaryIp",
        description=(
            "How the VIP moves on AWS: secondaryIp reassigns a private IP within one subnet (one AZ); "
            "elasticIp reassociates an Elastic IP across AZs (nodes in public subnets, clientCidrs required)."
        ),
    )
    instance_type: str = Field(default="m7i.large", pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$", description="EC2 type of both nodes.")
    ami: str = Field(
        default="resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
        pattern=r"^(ami-[0-9a-f]{8,17}|resolve:ssm:/.+)$",
        description="Amazon Linux 2023 AMI id, or resolve:ssm:<parameter> (the user data expects AL2023).",
    )
    availability_zones: list[str] = Field(
        default_factory=list,
        description=(
            "AZs of node a and node b (from platform:network.availabilityZones). Default: the first two for "
            "elasticIp; the first for secondaryIp, where both nodes share one subnet."
        ),
    )
    host_offset: int = Field(
        default=10, ge=4, le=200,
        description="Node a gets the subnet's address at this offset, node b the next, the secondaryIp VIP the one after.",
    )  # fmt: skip
    root_volume_gb: int = Field(default=30, ge=8, le=1024, description="Encrypted gp3 root volume (AOF lives there).")
    client_cidrs: list[ipaddress.IPv4Network] = Field(
        default_factory=list, description="Who may reach Redis. Default: the VPC (secondaryIp); required for elasticIp."
    )
    reconcile_interval_seconds: int = Field(
        default=10, ge=5, le=300,
        description="How often each node's agent rechecks VIP placement and Redis roles and publishes metrics.",
    )  # fmt: skip
    vrrp: VrrpConfig = Field(default_factory=VrrpConfig, description="Keepalived timing and health checks.")
    redis: RedisConfig = Field(default_factory=RedisConfig, description="The protected Redis primary/replica.")
    on_prem: OnPremFailoverConfig | None = Field(
        default=None, description="The private cloud's pair (rendered for its hosts; no AWS resources)."
    )

    @model_validator(mode="after")
    def _mode_rules(self) -> FailoverConfig:
        problems = []
        if len(self.availability_zones) > 2:
            problems.append((("availabilityZones",), self.availability_zones, "lists more than the pair's two nodes"))
        if self.vip_mode == "secondaryIp" and len(set(self.availability_zones)) > 1:
            problems.append((("availabilityZones",), self.availability_zones,
                             "must name one AZ for secondaryIp: a private IP moves only within one subnet"))  # fmt: skip
        if self.vip_mode == "elasticIp":
            if len(self.availability_zones) == 2 and self.availability_zones[0] == self.availability_zones[1]:
                problems.append((("availabilityZones",), self.availability_zones, "must be two different AZs for elasticIp"))
            if not self.client_cidrs:
                problems.append((("clientCidrs",), [], "is required for elasticIp: the nodes get public addresses"))
            for index, cidr in enumerate(self.client_cidrs):
                if cidr.prefixlen == 0:
                    problems.append((("clientCidrs", index), str(cidr), "would open Redis to the internet"))
        if problems:
            raise _CrossFieldErrors(problems)
        return self

    def node_azs(self, network_azs: list[str]) -> tuple[str, str]:
        chosen = list(self.availability_zones)
        if self.vip_mode == "secondaryIp":
            az = chosen[0] if chosen else network_azs[0]
            return az, az
        defaults = [az for az in network_azs if az not in chosen]
        chosen += defaults[: 2 - len(chosen)]
        return chosen[0], chosen[1]


# --------------------------------------------------------------------------- site-to-site VPN

AwsCipher = Literal["AES256-GCM-16", "AES128-GCM-16", "AES256", "AES128"]
AwsIntegrity = Literal["SHA2-256", "SHA2-384", "SHA2-512"]
AwsDhGroup = Literal[19, 20, 21]
# AWS's rules for a tunnel pre-shared key: 8-64 characters of letters, digits, '.' and '_', not starting with 0.
_PSK = re.compile(r"^[A-Za-z0-9._]{8,64}$")
# RFC 5737 documentation networks: accepted as customer gateway addresses so examples need no real address.
_DOCUMENTATION_NETS = tuple(ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))


def _distinct_items(value: list[Any]) -> list[Any]:
    if len(set(value)) != len(value):
        raise ValueError("lists a value more than once")
    return value


def _inside_cidr(value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    from components.vpn.tunnels import check_inside_cidr  # local: the tunnel rules import nothing from here

    return check_inside_cidr(value)


class IkeConfig(ConfigModel):
    """IKE and IPsec options, applied to both tunnels on AWS and matched by the on-prem render."""

    phase1_encryption: Annotated[list[AwsCipher], AfterValidator(_distinct_items)] = Field(
        default_factory=lambda: ["AES256-GCM-16", "AES256"], min_length=1,
        description="Phase 1 (IKE SA) ciphers, preferred first: AES-GCM, with AES-CBC as the fallback.",
    )  # fmt: skip
    phase1_integrity: Annotated[list[AwsIntegrity], AfterValidator(_distinct_items)] = Field(
        default_factory=lambda: ["SHA2-256", "SHA2-384"], min_length=1,
        description="Phase 1 integrity/PRF algorithms (the PRF with GCM, the HMAC with AES-CBC).",
    )  # fmt: skip
    phase1_dh_groups: Annotated[list[AwsDhGroup], AfterValidator(_distinct_items)] = Field(
        default_factory=lambda: [19, 20, 21], min_length=1, description="Phase 1 Diffie-Hellman groups (ECP 256/384/521)."
    )
    phase2_encryption: Annotated[list[AwsCipher], AfterValidator(_distinct_items)] = Field(
        default_factory=lambda: ["AES256-GCM-16", "AES256"], min_length=1, description="Phase 2 (ESP) ciphers."
    )
    phase2_integrity: Annotated[list[AwsIntegrity], AfterValidator(_distinct_items)] = Field(
        default_factory=lambda: ["SHA2-256", "SHA2-384"], min_length=1, description="Phase 2 integrity (with AES-CBC)."
    )
    phase2_dh_groups: Annotated[list[AwsDhGroup], AfterValidator(_distinct_items)] = Field(
        default_factory=lambda: [19, 20, 21], min_length=1, description="Phase 2 PFS Diffie-Hellman groups."
    )
    phase1_lifetime_seconds: int = Field(default=28800, ge=900, le=28800, description="IKE SA lifetime (900-28800).")
    phase2_lifetime_seconds: int = Field(
        default=3600, ge=900, le=3600, description="IPsec SA lifetime (900-3600, less than phase 1's)."
    )
    rekey_margin_seconds: int = Field(
        default=540, ge=60, description="Rekeying starts this long before a lifetime ends (60 to half of phase 2's)."
    )
    rekey_fuzz_percentage: int = Field(default=100, ge=0, le=100, description="Random share of the margin (spreads rekeys).")
    replay_window_size: int = Field(default=1024, ge=64, le=2048, description="IPsec replay window (packets).")
    dpd_timeout_seconds: int = Field(
        default=30, ge=30, le=3600, description="AWS declares the peer dead after this much silence (at least 30)."
    )
    dpd_timeout_action: Literal["clear", "none", "restart"] = Field(
        default="restart", description="What AWS does with a dead tunnel: restart re-initiates IKE, so it comes back by itself."
    )
    startup_action: Literal["add", "start"] = Field(
        default="start",
        description="start: AWS initiates the tunnels too (they come up without waiting for on-prem); add: on-prem must.",
    )

    @model_validator(mode="after")
    def _lifetimes(self) -> IkeConfig:
        problems = []
        if self.phase2_lifetime_seconds >= self.phase1_lifetime_seconds:
            problems.append((("phase2LifetimeSeconds",), self.phase2_lifetime_seconds,
                             f"must be less than phase1LifetimeSeconds ({self.phase1_lifetime_seconds})"))  # fmt: skip
        if self.rekey_margin_seconds > self.phase2_lifetime_seconds // 2:
            problems.append((("rekeyMarginSeconds",), self.rekey_margin_seconds,
                             f"must be at most half of phase2LifetimeSeconds ({self.phase2_lifetime_seconds // 2})"))  # fmt: skip
        if problems:
            raise _CrossFieldErrors(problems)
        return self


class VpnTunnelConfig(ConfigModel):
    """One of the connection's two tunnels (AWS terminates them on two different endpoints)."""

    inside_cidr: Annotated[ipaddress.IPv4Network, AfterValidator(_inside_cidr)] = Field(
        description="The tunnel's /30 inside 169.254.0.0/16 (BGP peering addresses; AWS's reserved /30s are refused)."
    )
    pre_shared_key: Secret | None = Field(
        default=None,
        description="IKE pre-shared key (8-64 of A-Z a-z 0-9 . _, not starting with 0). Unset: generated, kept in state.",
    )

    @field_validator("pre_shared_key")
    @classmethod
    def _aws_psk_rules(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            text = value.get_secret_value()
            if not _PSK.match(text) or text.startswith("0"):
                raise ValueError("AWS takes 8-64 characters of letters, digits, '.' and '_', not starting with 0")
        return value


class CustomerGatewayConfig(ConfigModel):
    """The on-prem VPN gateway as AWS sees it."""

    ip_address: ipaddress.IPv4Address = Field(description="Its public, internet-routable IPv4 address (the NAT's, behind NAT).")
    bgp_asn: int = Field(default=65000, ge=1, le=4294967294, description="Its BGP ASN (also used with static routing).")
    device_name: str | None = Field(default=None, max_length=255, description="Label of the device, shown in the AWS console.")

    @field_validator("ip_address")
    @classmethod
    def _public(cls, value: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        if not value.is_global and not any(value in net for net in _DOCUMENTATION_NETS):
            raise ValueError("must be the gateway's public, internet-routable address (not private, shared or reserved)")
        return value

    @field_validator("bgp_asn")
    @classmethod
    def _not_aws_reserved(cls, value: int) -> int:
        from components.vpn.tunnels import AWS_RESERVED_CUSTOMER_ASNS

        if value in AWS_RESERVED_CUSTOMER_ASNS:
            raise ValueError("is reserved by AWS (7224, 9059, 10124 and 17493 are refused)")
        return value


class VpnDnsConfig(ConfigModel):
    """Hybrid DNS through Route 53 Resolver endpoints in the private subnets."""

    inbound: bool = Field(default=True, description="Inbound endpoint: on-prem resolvers forward the VPC's private names here.")
    forward_domains: list[Annotated[str, Field(pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")]] = Field(
        default_factory=list, description="Domains the VPC resolves through the on-prem resolvers (outbound endpoint)."
    )
    on_prem_resolvers: list[ipaddress.IPv4Address] = Field(
        default_factory=list, description="On-prem DNS servers forwardDomains go to (reached over the VPN)."
    )

    @model_validator(mode="after")
    def _forwarding_needs_resolvers(self) -> VpnDnsConfig:
        if self.forward_domains and not self.on_prem_resolvers:
            raise _CrossFieldErrors([(("onPremResolvers",), [], "must name the on-prem DNS servers forwardDomains go to")])
        if not self.inbound and not self.forward_domains:
            raise _CrossFieldErrors([(("inbound",), False, "and no forwardDomains: there is nothing to create; drop dns")])
        return self


class OnPremVpnConfig(ConfigModel):
    """The on-prem gateway's side (``platformctl vpn onprem-config``): route-based strongSwan + FRR."""

    outside_interface: str = Field(
        default="eth0", pattern=r"^[A-Za-z0-9_.-]{1,15}$", description="Interface facing the internet (the XFRM interfaces' parent)."
    )
    local_address: ipaddress.IPv4Address | None = Field(
        default=None, description="Its own address on that interface when behind NAT. Default: customerGateway.ipAddress."
    )
    if_id_base: int = Field(
        default=41, ge=1, le=4294967293, description="XFRM interface id of tunnel 1; tunnel 2 takes the next."
    )
    interface_names: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")]] = Field(
        default_factory=lambda: ["aws-vpn1", "aws-vpn2"], min_length=2, max_length=2,
        description="Names of the two XFRM interfaces (one per tunnel).",
    )  # fmt: skip
    dpd_delay_seconds: int = Field(
        default=10, ge=2, le=300, description="Silence before the gateway checks that an AWS endpoint is alive."
    )
    bgp_router_id: ipaddress.IPv4Address | None = Field(
        default=None, description="FRR's BGP router id. Default: customerGateway.ipAddress."
    )


class VpnConfig(ConfigModel):
    """Site-to-site VPN to the private cloud: transit gateway, two IKEv2 tunnels (docs/vpn.md)."""

    customer_gateway: CustomerGatewayConfig = Field(description="The on-prem VPN gateway.")
    on_prem_cidrs: Annotated[list[ipaddress.IPv4Network], AfterValidator(_distinct_items)] = Field(
        min_length=1, description="The private cloud's networks reached through the VPN (routes, security groups)."
    )
    routing: Literal["bgp", "static"] = Field(
        default="bgp",
        description="bgp: routes exchanged and failover by BGP (recommended); static: onPremCidrs routed to the VPN.",
    )
    amazon_side_asn: int = Field(
        default=64512, description="The transit gateway's ASN: 64512-65534 or 4200000000-4294967294."
    )
    tunnels: list[VpnTunnelConfig] = Field(min_length=2, max_length=2, description="The two tunnels, in order.")
    ike: IkeConfig = Field(default_factory=IkeConfig, description="IKE/IPsec options of both tunnels.")
    log_retention_days: int = Field(default=30, description="Days CloudWatch keeps the tunnels' IKE and BGP logs.")
    access: list[Literal["inference", "awsEndpoints"]] = Field(
        default_factory=lambda: ["inference", "awsEndpoints"],
        description=(
            "What onPremCidrs may reach in the VPC: inference (the model servers' port on EKS), "
            "awsEndpoints (HTTPS to the interface endpoints, e.g. ECR image pulls). Nothing else."
        ),
    )
    dns: VpnDnsConfig | None = Field(default=None, description="Route 53 Resolver endpoints for hybrid DNS.")
    on_prem: OnPremVpnConfig = Field(default_factory=OnPremVpnConfig, description="The on-prem gateway's render.")

    _retention_allowed = field_validator("log_retention_days")(lambda value: cloudwatch_retention(value))

    @field_validator("amazon_side_asn")
    @classmethod
    def _private_asn(cls, value: int) -> int:
        if not (64512 <= value <= 65534 or 4200000000 <= value <= 4294967294):
            raise ValueError("must be a private ASN: 64512-65534 or 4200000000-4294967294")
        return value

    @model_validator(mode="after")
    def _tunnels_and_asns(self) -> VpnConfig:
        from components.vpn.tunnels import InsideCidrError, check_distinct_inside_cidrs

        problems = []
        try:
            check_distinct_inside_cidrs([t.inside_cidr for t in self.tunnels])
        except InsideCidrError as exc:
            problems.append((("tunnels", 1, "insideCidr"), str(self.tunnels[1].inside_cidr), str(exc)))
        if self.customer_gateway.bgp_asn == self.amazon_side_asn:
            problems.append((("customerGateway", "bgpAsn"), self.customer_gateway.bgp_asn,
                             "must differ from amazonSideAsn: the BGP sessions are external (eBGP)"))  # fmt: skip
        for index, cidr in enumerate(self.on_prem_cidrs):
            for other in self.on_prem_cidrs[:index]:
                if cidr.overlaps(other):
                    problems.append((("onPremCidrs", index), str(cidr), f"overlaps {other}"))
        if problems:
            raise _CrossFieldErrors(problems)
        return self


# --------------------------------------------------------------------------- tiered storage


class HotTierConfig(ConfigModel):
    """Node-local storage of the GPU nodes: the model cache and container logs, off the system disk."""

    source: Literal["instanceStore", "ebs"] = Field(
        default="instanceStore",
        description=(
            "instanceStore: the GPU instance's NVMe disks, striped (nodeadm RAID0) and used for kubelet, "
            "containerd and pod logs; every GPU type must have them. ebs: a gp3 data volume of sizeGib."
        ),
    )
    size_gib: int = Field(default=200, ge=20, le=16384, description="gp3 data volume size (source ebs).")
    throughput_mibps: int = Field(default=250, ge=125, le=1000, description="gp3 throughput, MiB/s (source ebs).")
    iops: int = Field(default=3000, ge=3000, le=16000, description="gp3 IOPS (source ebs).")
    retention_days: int = Field(
        default=3, ge=1, le=30,
        description="Days of logs each node keeps locally: container-log rotation and the shipper's buffer are sized for it.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _gp3_ratio(self) -> HotTierConfig:
        # gp3: at most 0.25 MiB/s of throughput per provisioned IOPS.
        if self.throughput_mibps > self.iops // 4:
            raise _CrossFieldErrors([(("throughputMibps",), self.throughput_mibps,
                                      f"gp3 allows at most iops/4 = {self.iops // 4} MiB/s at {self.iops} IOPS")])  # fmt: skip
        return self


class ColdClassConfig(ConfigModel):
    """One data class's bucket: when objects move down the tiers, when they expire (days after creation)."""

    standard_ia_days: int | None = Field(default=30, ge=30, description="To Standard-IA (S3's minimum: 30). Null: skip.")
    glacier_ir_days: int | None = Field(default=90, ge=1, description="To Glacier Instant Retrieval. Null: skip.")
    deep_archive_days: int | None = Field(default=180, ge=1, description="To Glacier Deep Archive. Null: skip.")
    expire_days: int | None = Field(default=730, ge=1, description="Deleted after this many days. Null: kept.")
    noncurrent_expire_days: int = Field(default=30, ge=1, description="Overwritten or deleted versions kept this long.")
    object_lock_days: int | None = Field(
        default=None, ge=1, le=36500,
        description="Object Lock (governance mode) default retention; only set at bucket creation (audit data).",
    )  # fmt: skip

    def transitions(self) -> list[tuple[str, str, int]]:
        """(config key, S3 storage class, days), in tier order, skipping null tiers."""
        tiers = [("standardIaDays", "STANDARD_IA", self.standard_ia_days),
                 ("glacierIrDays", "GLACIER_IR", self.glacier_ir_days),
                 ("deepArchiveDays", "DEEP_ARCHIVE", self.deep_archive_days)]  # fmt: skip
        return [(key, storage_class, days) for key, storage_class, days in tiers if days is not None]

    @model_validator(mode="after")
    def _schedule(self) -> ColdClassConfig:
        from components.storage.lifecycle import schedule_problems  # local: the rules import nothing from here

        problems = [((key,), value, message) for key, value, message in schedule_problems(self.transitions(), self.expire_days)]
        if self.object_lock_days is not None and self.expire_days is not None and self.expire_days < self.object_lock_days:
            problems.append((("expireDays",), self.expire_days,
                             f"is shorter than objectLockDays ({self.object_lock_days}): S3 cannot expire locked versions"))  # fmt: skip
        if problems:
            raise _CrossFieldErrors(problems)
        return self


def _default_classes() -> dict[str, ColdClassConfig]:
    return {
        "logs": ColdClassConfig(),
        # Audit records: locked against deletion for a year, kept seven.
        "audit": ColdClassConfig(expire_days=2555, object_lock_days=365),
        # Model-cache backups: restored whole, rarely; no Deep Archive (12-48 h restores).
        "model-cache-backups": ColdClassConfig(deep_archive_days=None, expire_days=365),
    }


class FirehoseConfig(ConfigModel):
    """The ingest buffer: Kinesis Data Firehose into the logs bucket."""

    buffering_size_mb: int = Field(
        default=64, ge=64, le=128, description="MiB Firehose buffers before writing (64+: dynamic partitioning's minimum)."
    )
    buffering_interval_seconds: int = Field(default=300, ge=0, le=900, description="Seconds Firehose buffers at most.")
    error_retention_days: int = Field(default=30, description="Days CloudWatch keeps Firehose's delivery errors.")

    _retention_allowed = field_validator("error_retention_days")(lambda value: cloudwatch_retention(value))


class LogShippingConfig(ConfigModel):
    """Fluent Bit on every EKS node, shipping container logs to Firehose."""

    image: PinnedImage = Field(default="cr.fluentbit.io/fluent/fluent-bit:3.2.10", description="Fluent Bit image.")
    namespace: str = Field(default="logging", pattern=_DNS_LABEL, description="Namespace of the DaemonSet.")
    gb_per_day: float = Field(
        default=10, gt=0, le=100000, description="Expected log volume of the whole cluster (sizes buffers; the estimator's usage file prices it)."
    )
    expected_nodes: int = Field(default=4, ge=1, le=5000, description="Nodes the volume spreads over (sizes each node's share).")


class StorageConfig(ConfigModel):
    """Tiered storage: hot node-local disks, cold S3 classes with lifecycle, a Firehose ingest buffer."""

    hot: HotTierConfig = Field(default_factory=HotTierConfig, description="Node-local storage of the GPU nodes.")
    classes: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,30}$")], ColdClassConfig] = Field(
        default_factory=_default_classes,
        description="Cold buckets, one per data class (logs, audit, model-cache-backups); `logs` receives Firehose.",
    )
    firehose: FirehoseConfig = Field(default_factory=FirehoseConfig, description="The ingest buffer into the logs bucket.")
    shipping: LogShippingConfig = Field(default_factory=LogShippingConfig, description="Fluent Bit DaemonSet on EKS.")
    access_log_retention_days: int = Field(default=90, ge=1, le=3650, description="Days S3 access logs of the buckets are kept.")
    audit_query_scan_limit_gb: int = Field(
        default=100, ge=1, le=100000,
        description="Athena's audit workgroup cancels a query that would scan more than this (cost guard).",
    )  # fmt: skip
    private_cloud_audit: bool = Field(
        default=True,
        description="With platform:privateCloud: Fluent Bit there ships its audit events (only) to the audit stream, "
                    "with an IAM user's access key that may put into that stream and nothing else.",
    )  # fmt: skip

    @field_validator("classes")
    @classmethod
    def _stream_classes(cls, value: dict[str, ColdClassConfig]) -> dict[str, ColdClassConfig]:
        if "logs" not in value:
            raise ValueError("must include `logs`: Firehose delivers there")
        if "audit" not in value or value["audit"].object_lock_days is None:
            raise ValueError("must include `audit` with objectLockDays: the audit stream delivers there, write-once")
        return value


# --------------------------------------------------------------------------- cost


class CostConfig(ConfigModel):
    """Budgets, allocation tags, the CUR 2.0 export and the deploy-time cost ledger."""

    monthly_budget_usd: float = Field(gt=0, description="Monthly budget of this stack (spend tagged with its environment).")
    actual_thresholds: list[Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=lambda: [50, 80, 100], description="Percent of the budget actually spent that notifies finance."
    )
    forecast_thresholds: list[Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=lambda: [100], description="Percent of the budget forecast to be spent that notifies finance."
    )
    finance_emails: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")]] = Field(
        default_factory=list, description="Addresses subscribed to the finance topic (each confirms once)."
    )
    activate_allocation_tags: bool = Field(
        default=False,
        description="Activate the standard tag keys as cost allocation tags (account-wide: one stack per account).",
    )
    cur_export: bool = Field(
        default=False, description="CUR 2.0 data export (resource-level, split cost allocation) for the account."
    )
    finance_reader_arns: list[Annotated[str, Field(pattern=r"^arn:aws:iam::\d{12}:role/[\w+=,.@/-]+$")]] = Field(
        default_factory=list, description="Roles finance uses to read the export and the ledger."
    )

    @field_validator("actual_thresholds", "forecast_thresholds")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("lists a threshold more than once")
        if len(value) > 5:
            raise ValueError("AWS Budgets allows at most 5 notifications per budget (actual and forecast together)")
        return sorted(value)

    @model_validator(mode="after")
    def _notification_limit(self) -> CostConfig:
        if len(self.actual_thresholds) + len(self.forecast_thresholds) > 5:
            raise _CrossFieldErrors([(("forecastThresholds",), self.forecast_thresholds,
                                      "together with actualThresholds exceeds AWS Budgets' 5 notifications per budget")])  # fmt: skip
        return self


class PlatformConfig(ConfigModel):
    """The ``platform:`` namespace. Each field is one top-level config key."""

    environment: str = Field(
        description=(
            "Environment name (dev, staging, prod, ...): the `environment` tag and part of "
            "every resource's Name. Lower-case letters, digits and '-', 2-16 chars."
        ),
    )
    ha: bool = Field(
        default=False,
        description=(
            "High availability: no single points of failure where the platform can avoid "
            "them (NAT per AZ, and in later components redundant control paths)."
        ),
    )
    aws: AwsConfig = Field(description="AWS account and region.")
    tags: TagConfig = Field(description="Ownership and cost-allocation tags.")
    network: NetworkConfig = Field(
        default_factory=NetworkConfig, description="VPC baseline: CIDR layout, AZs, NAT, VPC endpoints, flow logs."
    )
    eks: EksConfig = Field(default_factory=EksConfig, description="EKS cluster: version, endpoint, logs, add-ons, system nodes.")
    gpu: GpuConfig = Field(default_factory=GpuConfig, description="GPU capacity: reserved base, spot pool, device plugin.")
    image: ImageConfig = Field(default_factory=ImageConfig, description="Inference image: ECR repository and build.")
    inference: InferenceConfig = Field(
        default_factory=InferenceConfig, description="Model deployments to EKS and the private cloud."
    )
    private_cloud: PrivateCloudConfig | None = Field(
        default=None, description="The private-cloud Kubernetes target (kubeconfig as a secret)."
    )
    cost: CostConfig | None = Field(
        default=None, description="Budget, finance notifications, allocation tags, CUR export, cost ledger."
    )
    mirror: MirrorConfig | None = Field(
        default=None, description="Model mirror CDN (Hugging Face-compatible) and its sync schedule."
    )
    inference_jwt_secret: Secret | None = Field(
        default=None, description="HS256 signing secret for inference auth (only with auth.algorithm HS256)."
    )
    private_cloud_tls_certificate: Secret | None = Field(
        default=None, description="PEM certificate (chain) of the private-cloud ingress hosts, unless cert-manager issues it."
    )
    private_cloud_tls_key: Secret | None = Field(default=None, description="Its PEM private key.")
    mirror_signing_key: Secret | None = Field(
        default=None,
        description="PEM ECDSA P-256 private key the private cloud's mirror sync signs manifests with "
                    "(required with mirror.privateCloud; its public half goes to servers using that mirror).",
    )  # fmt: skip
    alerting: AlertingConfig = Field(default_factory=AlertingConfig, description="Alarm notifications.")
    failover: FailoverConfig | None = Field(
        default=None, description="Keepalived failover pair protecting the Redis session store (VIP, alarms)."
    )
    storage: StorageConfig = Field(
        default_factory=StorageConfig, description="Tiered storage: hot node disks, cold S3 with lifecycle, Firehose ingest."
    )
    vpn: VpnConfig | None = Field(
        default=None, description="Site-to-site VPN to the private cloud (transit gateway, two IKEv2 tunnels, alarms)."
    )

    @field_validator("environment")
    @classmethod
    def _environment_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{1,15}", value):
            raise ValueError("must be 2-16 lower-case letters, digits or '-', starting with a letter")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_azs_follow_region(cls, data: Any) -> Any:
        if isinstance(data, dict):
            region = (data.get("aws") or {}).get("region") if isinstance(data.get("aws"), dict) else None
            network = data.get("network", {})
            if region and isinstance(network, dict) and not network.get("availabilityZones"):
                data = {**data, "network": {**network, "availabilityZones": [f"{region}a", f"{region}b"]}}
        return data

    @model_validator(mode="after")
    def _cross_field_rules(self) -> PlatformConfig:
        network = self.network
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        if len(network.availability_zones) < 2:
            problems.append(
                (("network", "availabilityZones"), network.availability_zones,
                 "must list at least 2 availability zones: EKS and the subnet layout need two")
            )  # fmt: skip
        for index, az in enumerate(network.availability_zones):
            if not re.fullmatch(re.escape(self.aws.region) + r"[a-z]", az):
                problems.append(
                    (("network", "availabilityZones", index), az,
                     f"is not an availability zone of platform:aws.region = {self.aws.region}")
                )  # fmt: skip
        if len(network.availability_zones) > network.az_slots:
            problems.append(
                (("network", "availabilityZones"), network.availability_zones,
                 f"lists {len(network.availability_zones)} AZs but platform:network.azSlots is "
                 f"{network.az_slots}")
            )  # fmt: skip
        else:
            from components.network.cidr import CidrAllocationError, allocate_subnets

            try:
                allocate_subnets(network.vpc_cidr, network.availability_zones,
                                 network.subnet_prefix_lengths(), network.az_slots)  # fmt: skip
            except CidrAllocationError as exc:
                problems.append((("network", "vpcCidr"), str(network.vpc_cidr), str(exc)))
        reserved = self.gpu.reserved
        if reserved.availability_zone is not None and reserved.availability_zone not in network.availability_zones:
            problems.append(
                (("gpu", "reserved", "availabilityZone"), reserved.availability_zone,
                 f"must be one of platform:network.availabilityZones ({', '.join(network.availability_zones)})")
            )  # fmt: skip
        problems.extend(self._deployment_targets())
        if self.ha and network.nat_gateways == "single":
            problems.append(
                (("network", "natGateways"), "single",
                 "must be perAz in an environment with ha: true (one NAT gateway is a single "
                 "point of failure for all egress)")
            )  # fmt: skip
        if problems:
            raise _CrossFieldErrors(problems)
        return self

    def _deployment_targets(self) -> list[tuple[tuple[str | int, ...], Any, str]]:
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        eks_has_gpus = self.gpu.reserved.count > 0 or self.gpu.spot.max_size > 0
        for index, deployment in enumerate(self.inference.deployments):
            where = ("inference", "deployments", index)
            if deployment.target == "privateCloud" and self.private_cloud is None:
                problems.append((where + ("target",), "privateCloud", "names a cluster that isn't configured: "
                                 "set platform:privateCloud (kubeconfig as a secret)"))  # fmt: skip
            elif deployment.variant == "cuda":
                has_gpus = eks_has_gpus if deployment.target == "eks" else bool(self.private_cloud and self.private_cloud.gpu)
                if not has_gpus:
                    capacity = ("platform:gpu (reserved.count and spot.maxSize are 0)" if deployment.target == "eks"
                                else "platform:privateCloud.gpu is false")  # fmt: skip
                    problems.append((where + ("variant",), "cuda",
                                     f"needs GPUs but {deployment.target} has no GPU capacity: {capacity}"))  # fmt: skip
        if self.cost is not None and self.cost.cur_export and self.aws.region != "us-east-1":
            problems.append((("cost", "curExport"), True, "needs platform:aws.region us-east-1: the Data Exports "
                             "API is served from us-east-1 only"))  # fmt: skip
        if self.mirror is not None and self.mirror.private_cloud is not None and self.mirror_signing_key is None:
            problems.append((("mirrorSigningKey",), None, "is required (a secret) with mirror.privateCloud: the on-prem "
                             "sync signs what it publishes"))  # fmt: skip
        if self.mirror is not None and self.mirror.private_cloud is not None and self.private_cloud is None:
            problems.append((("mirror", "privateCloud"), "(set)", "needs platform:privateCloud (the cluster to run it on)"))
        problems.extend(self._download_egress())
        problems.extend(self._failover_placement())
        problems.extend(self._vpn_addressing())
        problems.extend(self._hot_tier())
        auth = self.inference.auth
        if auth is not None and auth.algorithm == "HS256" and self.inference_jwt_secret is None:
            problems.append((("inferenceJwtSecret",), None, "is required for inference.auth.algorithm HS256"))
        for index, deployment in enumerate(self.inference.deployments):
            if deployment.model_id and self.mirror is None and self.inference.mirror_public_key is None:
                problems.append((("inference", "mirrorPublicKey"), None,
                                 f"is required: deployments[{index}] downloads {deployment.model_id} and servers trust "
                                 "a download only through the mirror's signature (or add platform:mirror here)"))  # fmt: skip
        private_entry = self.inference.ingress.private_cloud
        if private_entry is not None and private_entry.cert_manager_issuer is None:
            for key, value in (("privateCloudTlsCertificate", self.private_cloud_tls_certificate),
                               ("privateCloudTlsKey", self.private_cloud_tls_key)):  # fmt: skip
                if value is None:
                    problems.append(((key,), None, "is required (a secret) for inference.ingress.privateCloud "
                                     "without certManagerIssuer"))  # fmt: skip
        if private_entry is not None and self.private_cloud is None:
            problems.append((("inference", "ingress", "privateCloud"), "(set)", "needs platform:privateCloud"))
        return problems

    def _download_egress(self) -> list[tuple[tuple[str | int, ...], Any, str]]:
        """Servers that download through the mirror need a way out to it (NetworkPolicy egress)."""
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        downloading = {d.target for d in self.inference.deployments if d.model_id}
        if "eks" in downloading and not self.inference.egress_cidrs:
            problems.append((("inference", "egressCidrs"), [], "must list the mirror's addresses: EKS deployments "
                             f"download from {self.inference.hf_endpoint} and the NetworkPolicy allows HTTPS only "
                             "to the VPC and these (0.0.0.0/0 for a CloudFront mirror, whose addresses vary)"))  # fmt: skip
        if "privateCloud" in downloading and self.private_cloud is not None and not self.private_cloud.egress_cidrs:
            problems.append((("privateCloud", "egressCidrs"), [], "must list the mirror's addresses: private-cloud "
                             f"deployments download from {self.inference.hf_endpoint}"))  # fmt: skip
        return problems

    def _failover_placement(self) -> list[tuple[tuple[str | int, ...], Any, str]]:
        if self.failover is None:
            return []
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        for index, az in enumerate(self.failover.availability_zones):
            if az not in self.network.availability_zones:
                problems.append((("failover", "availabilityZones", index), az,
                                 f"must be one of platform:network.availabilityZones ({', '.join(self.network.availability_zones)})"))  # fmt: skip
        tier = "public" if self.failover.vip_mode == "elasticIp" else "private"
        room = 2 ** (32 - self.network.subnet_prefix_lengths()[tier]) - 1  # minus the broadcast address
        if self.failover.host_offset + 3 > room:
            problems.append((("failover", "hostOffset"), self.failover.host_offset,
                             f"leaves no room for two nodes and a VIP in a {tier} subnet of /{self.network.subnet_prefix_lengths()[tier]}"))  # fmt: skip
        return problems

    def _hot_tier(self) -> list[tuple[tuple[str | int, ...], Any, str]]:
        """The GPU nodes' hot tier must exist on every GPU type and hold the model cache and the logs."""
        hot = self.storage.hot
        gpu_types = ([self.gpu.reserved.instance_type] if self.gpu.reserved.count else []) + (
            list(self.gpu.spot.instance_types) if self.gpu.spot.max_size else [])  # fmt: skip
        if hot.source == "instanceStore":
            without = sorted({t for t in gpu_types if t.split(".")[0] in GPU_FAMILIES_WITHOUT_INSTANCE_STORE})
            return [(("storage", "hot", "source"), "instanceStore",
                     f"{', '.join(without)} has no instance store: use source ebs or other GPU types")] if without else []  # fmt: skip
        from components.storage.shipping import hot_sizing

        caches = [_gibibytes(d.resources.model_cache) for d in self.inference.deployments if d.target == "eks" and d.variant == "cuda"]
        needed = max(caches, default=0) + hot_sizing(hot, self.storage.shipping).hot_log_gib
        if hot.size_gib < needed:
            return [(("storage", "hot", "sizeGib"), hot.size_gib,
                     f"must hold the largest EKS model cache ({max(caches, default=0):g} GiB) and "
                     f"{hot_sizing(hot, self.storage.shipping).hot_log_gib:.1f} GiB of logs: at least {math.ceil(needed)}")]  # fmt: skip
        return []

    def _vpn_addressing(self) -> list[tuple[tuple[str | int, ...], Any, str]]:
        """The private cloud's networks must not collide with the VPC's: routes to them would be ambiguous."""
        if self.vpn is None:
            return []
        return [(("vpn", "onPremCidrs", index), str(cidr), f"overlaps platform:network.vpcCidr ({self.network.vpc_cidr})")
                for index, cidr in enumerate(self.vpn.on_prem_cidrs) if cidr.overlaps(self.network.vpc_cidr)]  # fmt: skip

    @property
    def reserved_gpu_az(self) -> str:
        return self.gpu.reserved.availability_zone or self.network.availability_zones[0]

    @property
    def nat_gateway_mode(self) -> Literal["single", "perAz"]:
        if self.network.nat_gateways is not None:
            return self.network.nat_gateways
        return "perAz" if self.ha else "single"


class _CrossFieldErrors(ValueError):
    """Rules spanning several keys; carries each problem's own key path."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], Any, str]]):
        super().__init__("; ".join(message for _, _, message in problems))
        self.problems = problems


# --------------------------------------------------------------------------- errors


class ConfigError(pulumi.RunError):
    """A stack's configuration is invalid. ``str()`` is the complete user-facing message.

    A RunError, so under `pulumi up` the language host prints the message alone, with
    no Python traceback.
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: invalid platform configuration"]
        lines += [f"  {source}: {problem}" for problem in problems]
        super().__init__("\n".join(lines))


def _key_path(loc: Iterable[str | int]) -> str:
    parts = list(loc)
    if not parts:
        return NAMESPACE
    text = f"{NAMESPACE}:{parts[0]}"
    for part in parts[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _show(value: Any, secret: bool = False) -> str:
    if secret:
        return "[secret]"
    if isinstance(value, SecretStr):
        return "[secret]"
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class found by following ``loc`` (aliases) down from ``model``."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next(
            (f for name, f in current.model_fields.items() if (f.alias or name) == part or name == part),
            None,
        )
        if field is None:
            return None
        current = nested_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def nested_model(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] / list[...] / dict[..., ...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = nested_model(arg)
        if found is not None:
            return found
    return None


def _unknown_key_hint(model: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    parent = _model_at(model, loc[:-1]) if len(loc) > 1 else model
    if parent is None:
        return "unknown key"
    known = [f.alias or n for n, f in parent.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown key{hint} (allowed: {', '.join(known)})"


def _format_validation_error(
    model: type[BaseModel], error: ValidationError, secret_keys: set[str]
) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        secret = bool(loc) and str(loc[0]) in secret_keys
        if item["type"] == "extra_forbidden":
            problems.append(f"{_key_path(loc)}: {_unknown_key_hint(model, loc)}")
            continue
        if item["type"] == "missing":
            field_model = _model_at(model, loc[:-1]) if len(loc) > 1 else model
            description = ""
            if field_model is not None:
                field = next(
                    (f for n, f in field_model.model_fields.items() if (f.alias or n) == loc[-1]), None
                )
                if field is not None and field.description:
                    description = f" ({field.description})"
            problems.append(f"{_key_path(loc)}: required key is missing{description}")
            continue
        ctx_error = (item.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _CrossFieldErrors):
            # Paths are relative to the model that raised (the root for PlatformConfig).
            for sub_loc, value, message in ctx_error.problems:
                problems.append(f"{_key_path(loc + tuple(sub_loc))} = {_show(value, secret)}: {message}")
            continue
        message = item["msg"]
        message = message.removeprefix("Value error, ")
        problems.append(f"{_key_path(loc)} = {_show(item.get('input'), secret)}: {message}")
    return problems


# --------------------------------------------------------------------------- secrets


def _contains_secret(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated and any(isinstance(a, SecretMarker) for a in get_args(annotation)[1:]):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(_field_is_secret(f) for f in annotation.model_fields.values())
    return any(_contains_secret(arg) for arg in get_args(annotation))


def _field_is_secret(field: Any) -> bool:
    return any(isinstance(m, SecretMarker) for m in field.metadata) or _contains_secret(field.annotation)


def _secret_value_set(field: Any, value: Any) -> bool:
    """Whether ``value`` (a key's raw value) sets a secret-marked field anywhere inside.

    An object key whose secret members are optional and unset holds no secret, so it
    may stay plaintext (e.g. platform:vpn with generated pre-shared keys).
    """
    if value is None:
        return False
    if any(isinstance(m, SecretMarker) for m in getattr(field, "metadata", ())):
        return True
    return _annotation_secret_set(field.annotation, value)


def _annotation_secret_set(annotation: Any, value: Any) -> bool:
    if value is None:
        return False
    if get_origin(annotation) is Annotated:
        if any(isinstance(a, SecretMarker) for a in get_args(annotation)[1:]):
            return True
        return _annotation_secret_set(get_args(annotation)[0], value)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not isinstance(value, dict):
            return False
        return any(_secret_value_set(f, value.get(f.alias or n, value.get(n))) for n, f in annotation.model_fields.items())
    origin = get_origin(annotation)
    if origin is list and isinstance(value, list):
        return any(_annotation_secret_set(get_args(annotation)[0], item) for item in value)
    if origin is dict and isinstance(value, dict):
        return any(_annotation_secret_set(get_args(annotation)[1], item) for item in value.values())
    if origin in (Union, UnionType):
        return any(_annotation_secret_set(arg, value) for arg in get_args(annotation) if arg is not type(None))
    return False


def secret_config_keys(model: type[BaseModel] = PlatformConfig) -> list[str]:
    """Top-level keys whose value holds a secret anywhere inside; they must be set with --secret."""
    return [f.alias or n for n, f in model.model_fields.items() if _field_is_secret(f)]


# --------------------------------------------------------------------------- loading


def _is_structured(field: Any) -> bool:
    """Object- and list-valued keys arrive from the engine as JSON text."""
    annotation = field.annotation
    origin = get_origin(annotation)
    if origin in (list, dict) or nested_model(annotation) is not None:
        return True
    if origin in (Union, UnionType):
        return any(get_origin(a) in (list, dict) for a in get_args(annotation))
    return False


def parse_config(
    raw: Mapping[str, str],
    secret_keys: Iterable[str],
    source: str,
    model: type[BaseModel] = PlatformConfig,
) -> BaseModel:
    """Validate engine-style config (``{"platform:key": "text"}``) into ``model``.

    ``raw`` holds every config key of the stack (other namespaces are ignored);
    values are the strings the Pulumi engine passes (JSON for objects and lists).
    ``secret_keys`` are the keys the stack stores encrypted. Raises
    :class:`ConfigError` listing every problem, each naming ``source``.
    """
    secret_keys = set(secret_keys)
    prefix = f"{NAMESPACE}:"
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for full_key, text in raw.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix):]
        field = fields.get(key)
        if field is None:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            problems.append(f"{full_key}: unknown key{hint} (allowed: {', '.join(fields)})")
            continue
        value: Any = text
        if _is_structured(field) and isinstance(text, str):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(f"{full_key}: is not a valid object/list ({exc.msg})")
                continue
        if full_key not in secret_keys and _secret_value_set(field, value):
            problems.append(
                f"{full_key}: holds a secret but is stored in plaintext; set it with "
                f"`pulumi config set --secret {full_key} ...` (or `--path --secret` for one "
                "nested value)"
            )
            secret_keys.add(full_key)  # validate it as usual, but never echo it
        values[key] = value
    try:
        parsed = model.model_validate(values)
    except ValidationError as exc:
        problems.extend(_format_validation_error(model, exc, _names_in_namespace(secret_keys)))
        parsed = None
    if problems:
        raise ConfigError(source, problems)
    assert parsed is not None
    return parsed


def _names_in_namespace(full_keys: Iterable[str]) -> set[str]:
    """Top-level key names (without namespace) among ``full_keys`` in our namespace."""
    prefix = f"{NAMESPACE}:"
    return {k[len(prefix):] for k in full_keys if k.startswith(prefix)}


def stack_config_source(stack: str, stack_config_dir: str = "stacks") -> str:
    """The file a stack's config lives in, as users see it (``stacks/Pulumi.prod.yaml``)."""
    return f"{stack_config_dir.rstrip('/')}/Pulumi.{stack}.yaml"


def load_platform_config(
    get_all: Callable[[], tuple[dict[str, str], set[str]]] | None = None,
) -> PlatformConfig:
    """Read and validate the running stack's ``platform:`` config (call before declaring resources)."""
    from pulumi.runtime import config as runtime_config

    if get_all is None:
        def get_all() -> tuple[dict[str, str], set[str]]:
            # The language host passes config via PULUMI_CONFIG; the mock harness and
            # the automation API set it in-process. Read both.
            raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
            secrets = set(runtime_config.get_config_secret_keys_env()) | set(runtime_config._SECRET_KEYS.get())
            return raw, secrets

    raw, secrets = get_all()
    source = stack_config_source(pulumi.get_stack(), _stack_config_dir())
    config = parse_config(raw, secrets, source)
    assert isinstance(config, PlatformConfig)
    return config


def _stack_config_dir() -> str:
    """``stackConfigDir`` from Pulumi.yaml (the program runs with the project dir as cwd)."""
    import os

    import yaml

    try:
        with open(os.path.join(os.getcwd(), "Pulumi.yaml"), encoding="utf-8") as handle:
            return (yaml.safe_load(handle) or {}).get("stackConfigDir") or "."
    except OSError:
        return "."
