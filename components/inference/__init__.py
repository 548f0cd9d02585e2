"""The versioned inference image (ECR + pulumi-docker-build) and its deployments to Kubernetes.

``InferenceImage`` builds ``inference_image/`` once per variant the stack deploys and pushes
it with ``<version>`` and ``<version>-<source id>`` tags to an immutable, scanned,
KMS-encrypted repository. ``ModelServing`` declares one cluster's model servers; they run
the image **by digest** (``repository@sha256:...``), never by tag. See docs/deploying.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import kubernetes
from components.base import PlatformComponent
from components.config import ImageConfig, InferenceConfig, ModelDeploymentConfig, PlatformConfig
from components.eks import SYSTEM_NODE_LABELS
from components.eks.policies import irsa_trust_policy
from components.inference import image as image_identity
from components.inference import manifests, rollouts
from components.tagging import TagContext, resource_name

__all__ = ["InferenceImage", "InferenceImageArgs", "ModelServing", "ModelServingArgs", "deploy_models",
           "jwt_key_material", "private_cloud_provider", "serving_targets"]

BUILD_PLATFORM = "linux/amd64"


@dataclass(frozen=True)
class InferenceImageArgs:
    config: ImageConfig
    variants: tuple[str, ...]  # the variants this stack deploys; each is built once
    repository_prefix: str  # e.g. platform-prod-inference-server
    project_root: Path


class InferenceImage(PlatformComponent):
    """ECR repositories (one per variant) and the image build; ``refs`` are digest references."""

    def __init__(self, name: str, args: InferenceImageArgs, tags: TagContext, provider: aws.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        # Everything that can be wrong with the source is found before anything is declared;
        # a RunError, so `pulumi up` prints the message without a traceback.
        try:
            self.version = image_identity.read_version(args.project_root)
            self.revision = image_identity.source_revision(args.project_root)
        except image_identity.ImageSourceError as exc:
            raise pulumi.RunError(str(exc)) from exc
        super().__init__("platform:inference:Image", name, name, tags, provider, opts)
        if self.revision.dirty:
            pulumi.log.warn(
                f"{image_identity.IMAGE_DIR}/ has uncommitted changes: the image is tagged "
                f"{self.version}-{self.revision.short_id}-dirty; ECR's immutable tags refuse a second, "
                "different push under the same tags, so commit before deploying",
                resource=self,
            )
        config = args.config
        key = aws.kms.Key(self.child_name("ecr"), description=f"Encryption of the {args.repository_prefix} images",
                          enable_key_rotation=True, deletion_window_in_days=30, tags=self.tags("ecr"),
                          opts=self.child_opts())  # fmt: skip
        cache = self._repository("cache", f"{args.repository_prefix}-buildcache", key, mutable=True)
        aws.ecr.LifecyclePolicy(self.child_name("cache-lifecycle"), repository=cache.name,
                                policy=image_identity.cache_lifecycle_policy(), opts=self.child_opts())  # fmt: skip
        self.repository_urls: dict[str, pulumi.Output[str]] = {}
        self.refs: dict[str, pulumi.Output[str]] = {}
        for variant in args.variants:
            repository = self._repository(variant, f"{args.repository_prefix}-{variant}", key, mutable=False)
            aws.ecr.LifecyclePolicy(
                self.child_name(f"{variant}-lifecycle"), repository=repository.name,
                policy=image_identity.lifecycle_policy(config.keep_versions, config.untagged_expiry_days),
                opts=self.child_opts(),
            )  # fmt: skip
            cache_ref = cache.repository_url.apply(lambda url, v=variant: image_identity.cache_ref(url, v))
            self.repository_urls[variant] = repository.repository_url
            self.refs[variant] = self.pushed_image(
                variant, repository, image_identity.IMAGE_DIR,
                build_args={"VARIANT": variant, "VERSION": self.version, "REVISION": self.revision.short_id,
                            "SOURCE": config.source_url},
                tags=repository.repository_url.apply(lambda url: image_identity.image_tags(url, self.version, self.revision)),
                build_on_preview=config.build_on_preview, cache_ref=cache_ref,
            )  # fmt: skip
        self.release_tag = image_identity.release_tag(self.version, self.revision)
        self.register_outputs({"version": self.version, "sourceRevision": self.revision.short_id,
                               "repositoryUrls": self.repository_urls, "refs": self.refs})  # fmt: skip

    def _repository(self, suffix: str, repository_name: str, key: aws.kms.Key, mutable: bool) -> aws.ecr.Repository:
        return aws.ecr.Repository(
            self.child_name(suffix),
            name=repository_name,
            # Release tags never move; the build cache's tags must, so it lives apart.
            image_tag_mutability="MUTABLE" if mutable else "IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True},
            encryption_configurations=[{"encryption_type": "KMS", "kms_key": key.arn}],
            tags=self.tags(suffix),
            opts=self.child_opts(),
        )


@dataclass(frozen=True)
class ModelServingArgs:
    config: InferenceConfig
    deployments: tuple[ModelDeploymentConfig, ...]  # those whose target is this cluster
    target: manifests.TargetCluster
    k8s_provider: k8s.Provider
    image_refs: dict[str, pulumi.Input[str]]
    version: str
    jwt_key: pulumi.Input[str]  # the public key (RS256) or the secret (HS256); stored as a Secret
    oidc_provider_arn: pulumi.Input[str] | None = None  # EKS: IRSA for the mirror bucket
    oidc_issuer: pulumi.Input[str] | None = None
    crds: pulumi.Resource | None = None  # what installs the CRDs its ServiceMonitors need (EKS: the Prometheus stack)
    mirror_public_key: pulumi.Input[str] | None = None  # PEM: servers trust mirrored models through its signatures
    image_tag: str | None = None  # <version>-<source id> of the build the refs point at (pod template annotation)


class ModelServing(PlatformComponent):
    """One cluster's model servers: namespace, identity, settings, Deployments and their guards."""

    def __init__(self, name: str, args: ModelServingArgs, tags: TagContext, provider: aws.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        missing = sorted({d.variant for d in args.deployments} - set(args.image_refs))
        if missing:
            raise ValueError(f"{name}: no image built for variant(s) {', '.join(missing)}")
        super().__init__("platform:inference:ModelServing", name, name, tags, provider, opts)
        self._args = args
        config = args.config
        role_arn = self._mirror_reader_role() if args.oidc_provider_arn is not None else None
        namespace = self._apply("namespace", manifests.namespace(config))
        after_namespace = [namespace]
        self._apply("service-account", manifests.service_account(config, role_arn), after_namespace)
        self._apply("auth", manifests.auth_secret(config, pulumi.Output.secret(args.jwt_key)), after_namespace)
        self._apply("default-deny", manifests.default_deny(config), after_namespace)
        key = args.mirror_public_key is not None
        if any(manifests.signs(d, key) for d in args.deployments):
            self._apply("mirror-signing-key", manifests.mirror_key_config_map(config, args.mirror_public_key), after_namespace)
        # Argo Rollouts' controller and CRDs, where a deployment here has a canary.
        self._rollouts_release = self._rollouts_controller() if any(d.canary for d in args.deployments) else None
        self.deployments: dict[str, str] = {}
        for deployment in args.deployments:
            workload = manifests.deployment_manifest(deployment, config, args.target, args.image_refs[deployment.variant],
                                                     args.version, key, image_tag=args.image_tag)  # fmt: skip
            objects = [
                manifests.service(deployment, config, args.version),
                manifests.autoscaler(deployment, config, args.version),
                manifests.disruption_budget(deployment, config, args.version),
                manifests.network_policy(deployment, config, args.target, args.version),
            ]
            if deployment.canary is not None:
                workload, canary_objects = self._canary(deployment, workload)
                objects += canary_objects
            objects.insert(0, workload)
            if config.service_monitor:
                objects.append(manifests.service_monitor(deployment, config, args.version))
            for manifest in objects:
                role = manifest["metadata"]["labels"].get(manifests.TRAFFIC_ROLE_LABEL)
                suffix = manifest["kind"].lower() + (f"-{role}" if role else "")
                self._apply(f"{deployment.name}-{suffix}", manifest, after_namespace)
            self.deployments[deployment.name] = f"{config.namespace}/{deployment.name}"
        self.register_outputs({"namespace": config.namespace, "deployments": self.deployments})

    def _canary(self, deployment: ModelDeploymentConfig, workload: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The Deployment as an Argo Rollout with its canary, the AnalysisTemplate, and (behind an
        entry) the stable/canary Services the entry's split steers."""
        config, canary = self._args.config, deployment.canary
        assert canary is not None
        routing = rollouts.traffic_routing(deployment)
        strategy = rollouts.canary_strategy(deployment.name, canary, routing)
        objects = [rollouts.analysis_template(deployment.name, config.namespace, canary.analysis,
                                              rollouts.prometheus_url(config, self._args.target.name),
                                              manifests.labels(deployment.name, self._args.version))]  # fmt: skip
        if routing is not None:
            objects += [manifests.service(deployment, config, self._args.version, role) for role in ("stable", "canary")]
        return rollouts.rollout_from_deployment(workload, strategy), objects

    def _rollouts_controller(self) -> k8s.helm.v3.Release:
        args = self._args
        settings = args.config.rollouts
        # EKS: on the system nodes, beside the other controllers; elsewhere wherever the cluster puts it.
        node_selector = SYSTEM_NODE_LABELS if args.target.has_gpu_scheduling_contract else None
        return k8s.helm.v3.Release(
            self.child_name("rollouts-controller"), name="argo-rollouts", chart="argo-rollouts",
            version=settings.chart_version, repository_opts={"repo": rollouts.ARGO_CHARTS}, namespace=settings.namespace,
            create_namespace=True, values=rollouts.controller_values(node_selector),
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider),
        )  # fmt: skip

    def _apply(self, suffix: str, manifest: dict[str, Any], depends_on: list[pulumi.Resource] | None = None
               ) -> pulumi.Resource:  # fmt: skip
        opts = pulumi.ResourceOptions(parent=self, provider=self._args.k8s_provider, depends_on=depends_on)
        crd_backed = (manifest["apiVersion"], manifest["kind"]) not in kubernetes.TYPED
        # After whatever installs the CRD: Argo Rollouts for its kinds, else the Prometheus stack (ServiceMonitor).
        crds = self._rollouts_release if manifest["apiVersion"] == manifests.ROLLOUTS_API else self._args.crds
        if crd_backed and crds is not None:
            opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[crds]))
        return kubernetes.declare(self.child_name(suffix), manifest, opts)

    def _mirror_reader_role(self) -> pulumi.Output[str] | None:
        args = self._args
        bucket = args.config.mirror_bucket
        if bucket is None:
            return None
        trust = pulumi.Output.all(args.oidc_provider_arn, args.oidc_issuer).apply(
            lambda parts: irsa_trust_policy(parts[0], parts[1], args.config.namespace, manifests.SERVICE_ACCOUNT)
        )
        role = aws.iam.Role(self.child_name("mirror-reader"), assume_role_policy=trust,
                            tags=self.tags("mirror-reader"), opts=self.child_opts())  # fmt: skip
        aws.iam.RolePolicy(self.child_name("mirror-reader"), role=role.id,
                           policy=mirror_read_policy(bucket), opts=self.child_opts())  # fmt: skip
        return role.arn


def mirror_read_policy(bucket: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "ListMirror", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"},
        {"Sid": "ReadMirror", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"},
    ]})  # fmt: skip


def serving_targets(config: PlatformConfig) -> dict[str, manifests.TargetCluster]:
    """The clusters this stack can deploy models to, from config alone."""
    targets = {
        "eks": manifests.TargetCluster(
            name="eks",
            kubernetes_version=config.eks.version,
            has_gpu_scheduling_contract=True,
            # AWS APIs through the VPC's interface endpoints, plus the mirror's addresses.
            egress_cidrs=tuple(str(c) for c in [config.network.vpc_cidr, *config.inference.egress_cidrs]),
            client_cidrs=tuple(str(c) for c in config.vpn.on_prem_cidrs)
            if config.vpn is not None and "inference" in config.vpn.access else (),
            load_balancer_cidrs=load_balancer_cidrs(config),
        )
    }
    cloud = config.private_cloud
    if cloud is not None:
        targets["privateCloud"] = manifests.TargetCluster(
            name="privateCloud",
            kubernetes_version=cloud.kubernetes_version,
            has_gpu_scheduling_contract=False,
            gpu_node_selector=dict(cloud.gpu_node_selector),
            egress_cidrs=tuple(str(c) for c in cloud.egress_cidrs),
            image_pull_secret=cloud.image_pull_secret,
        )
    return targets


def load_balancer_cidrs(config: PlatformConfig) -> tuple[str, ...]:
    """The subnets the EKS ingress's ALB lives in: public when internet-facing, private when internal."""
    entry = config.inference.ingress.eks
    if entry is None:
        return ()
    from components.network.cidr import allocate_subnets

    tier = "public" if entry.scheme == "internet-facing" else "private"
    network = config.network
    plans = allocate_subnets(network.vpc_cidr, network.availability_zones, network.subnet_prefix_lengths(), network.az_slots)
    return tuple(str(plan.cidr) for plan in plans if plan.tier == tier)


def jwt_key_material(config: PlatformConfig) -> str | None:
    """What the servers verify tokens with: the RS256 public key, or the HS256 secret."""
    auth = config.inference.auth
    if auth is None:
        return None
    if auth.algorithm == "HS256":
        assert config.inference_jwt_secret is not None  # the config model requires it
        return config.inference_jwt_secret.get_secret_value()
    return auth.public_key


def deploy_models(config: PlatformConfig, tags: TagContext, provider: aws.Provider, project_root: Path,
                  eks_provider: k8s.Provider, oidc_provider_arn: pulumi.Input[str], oidc_issuer: pulumi.Input[str],
                  private_cloud_provider: k8s.Provider | None = None, eks_crds: pulumi.Resource | None = None,
                  mirror_public_key: pulumi.Input[str] | None = None,
                  ) -> tuple[InferenceImage, dict[str, ModelServing]]:  # fmt: skip
    """The image, built once per variant the stack deploys, and the model servers on each
    cluster that has deployments: EKS, and the private cloud when configured."""
    image = InferenceImage(
        "inference-image",
        InferenceImageArgs(config=config.image, variants=config.inference.variants,
                           repository_prefix=resource_name(tags.project, config.environment, "inference-server"),
                           project_root=project_root),
        tags=tags, provider=provider,
    )  # fmt: skip
    k8s_providers = {"eks": eks_provider}
    if private_cloud_provider is not None:
        k8s_providers["privateCloud"] = private_cloud_provider
    irsa = {"eks": (oidc_provider_arn, oidc_issuer)}  # IRSA exists on EKS only
    serving = {}
    for target_name, target in serving_targets(config).items():
        deployments = config.inference.on(target_name)
        if not deployments:
            continue
        oidc_arn, issuer = irsa.get(target_name, (None, None))
        serving[target_name] = ModelServing(
            f"serving-{target_name.lower()}",
            ModelServingArgs(config=config.inference, deployments=deployments, target=target,
                             k8s_provider=k8s_providers[target_name], image_refs=image.refs, version=image.version,
                             jwt_key=jwt_key_material(config), oidc_provider_arn=oidc_arn, oidc_issuer=issuer,
                             crds=eks_crds if target_name == "eks" else None,
                             mirror_public_key=mirror_public_key or config.inference.mirror_public_key,
                             image_tag=image.release_tag),
            tags=tags, provider=provider,
        )  # fmt: skip
    return image, serving


def private_cloud_provider(config: PlatformConfig) -> k8s.Provider | None:
    """The private cloud's Kubernetes provider, from the kubeconfig secret, when one is configured."""
    if config.private_cloud is None:
        return None
    kubeconfig = pulumi.Output.secret(config.private_cloud.kubeconfig.get_secret_value())
    return k8s.Provider("private-cloud", kubeconfig=kubeconfig)
