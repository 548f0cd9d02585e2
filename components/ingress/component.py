"""``platform:ingress:AlbEntry`` (EKS) and ``platform:ingress:NginxEntry`` (private cloud): TLS 1.3
entry to the model servers with ``expose: true`` (docs/ingress.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import kubernetes
from components.base import PlatformComponent
from components.config import EksIngressConfig, InferenceConfig, ModelDeploymentConfig, PrivateIngressConfig
from components.eks import SYSTEM_NODE_LABELS
from components.eks.policies import irsa_trust_policy
from components.ingress import policies
from components.inference.manifests import termination_grace_seconds
from components.tagging import TagContext


@dataclass(frozen=True)
class AlbEntryArgs:
    config: EksIngressConfig
    inference: InferenceConfig
    deployments: tuple[ModelDeploymentConfig, ...]  # the exposed ones on EKS
    version: str  # the image version (labels)
    region: str
    cluster_name: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer: pulumi.Input[str]
    k8s_provider: k8s.Provider
    log_bucket: pulumi.Input[str]  # tiered storage's SSE-S3 log bucket (ALB logs under alb/)
    serving: pulumi.Resource  # the model servers' component: their namespace and Services first


class AlbEntry(PlatformComponent):
    """The AWS Load Balancer Controller (IRSA, AWS's published policy), one shared ALB for every
    exposed deployment (an Ingress each, <name>.<domain>), TLS 1.3 listener policy, HTTP → HTTPS,
    health checks on /readyz, a WAFv2 web ACL, an ACM certificate (DNS-validated) and Route 53
    records when the zone is given.

    Outputs: ``hosts`` (deployment → URL), ``web_acl_arn``, ``certificate_arn``,
    ``certificate_validation`` (records to create by hand when no hosted zone is configured).
    """

    def __init__(self, name: str, args: AlbEntryArgs, tags: TagContext, provider: aws.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        config = args.config
        max_body = max(d.server.max_body_bytes for d in args.deployments)
        acl_name = f"{tags.project}-{tags.environment}-inference"  # the ACL, its metric, and each rule's metric prefix
        rules = policies.waf_rules(config.waf, max_body, acl_name)  # built before anything is declared
        super().__init__("platform:ingress:AlbEntry", name, name, tags, provider, opts)
        controller = self._controller(args)
        certificate_arn, self.certificate_validation = self._certificate(config)
        web_acl = aws.wafv2.WebAcl(
            self.child_name("waf"), name=acl_name, scope="REGIONAL",
            description="Inference API: managed rules, body size, per-IP rate", default_action={"allow": {}},
            rules=policies.to_pulumi(rules),
            visibility_config={"cloudwatch_metrics_enabled": True, "metric_name": acl_name,
                               "sampled_requests_enabled": True},
            tags=self.tags("waf"), opts=self.child_opts(),
        )  # fmt: skip
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider, depends_on=[controller, args.serving])
        self.hosts: dict[str, str] = {}
        for deployment in args.deployments:
            annotations = policies.alb_annotations(
                config, group=f"{self.stack_prefix}-inference", certificate_arn=certificate_arn, web_acl_arn=web_acl.arn,
                log_bucket=args.log_bucket, deregistration_seconds=termination_grace_seconds(deployment),
                tags=self.tags("alb"))  # fmt: skip
            manifest = policies.ingress(deployment, args.inference, args.version, policies.ALB_CLASS, config.domain,
                                        annotations, tls_secret=None)  # fmt: skip
            resource = kubernetes.declare(self.child_name(deployment.name), manifest, k8s_opts)
            host = policies.host(deployment, config.domain)
            if config.hosted_zone_id is not None:
                target = resource.status.apply(lambda s: s.load_balancer.ingress[0].hostname if s and s.load_balancer
                                               and s.load_balancer.ingress else None)  # fmt: skip
                aws.route53.Record(self.child_name(f"{deployment.name}-dns"), zone_id=config.hosted_zone_id, name=host,
                                   type="CNAME", ttl=60, records=[target], opts=self.child_opts())  # fmt: skip
            self.hosts[deployment.name] = f"https://{host}"
        self.web_acl_arn = web_acl.arn
        self.certificate_arn = certificate_arn
        self.register_outputs({"hosts": self.hosts, "web_acl_arn": web_acl.arn, "certificate_arn": certificate_arn})

    def _controller(self, args: AlbEntryArgs) -> pulumi.Resource:
        trust = pulumi.Output.all(args.oidc_provider_arn, args.oidc_issuer).apply(
            lambda v: irsa_trust_policy(v[0], v[1], policies.CONTROLLER_NAMESPACE, policies.CONTROLLER_SERVICE_ACCOUNT))
        role = aws.iam.Role(self.child_name("controller"), description="AWS Load Balancer Controller (IRSA)",
                            assume_role_policy=trust, tags=self.tags("controller"), opts=self.child_opts())  # fmt: skip
        policy = aws.iam.RolePolicy(self.child_name("controller"), role=role.id, policy=policies.controller_policy(),
                                    opts=self.child_opts())  # fmt: skip
        return k8s.helm.v3.Release(
            self.child_name("controller"), name="aws-load-balancer-controller", chart="aws-load-balancer-controller",
            version=args.config.controller_chart_version, repository_opts={"repo": policies.EKS_CHARTS},
            namespace=policies.CONTROLLER_NAMESPACE,
            values=policies.controller_values(args.cluster_name, args.region, args.vpc_id, role.arn, SYSTEM_NODE_LABELS),
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider, depends_on=[policy]),
        )  # fmt: skip

    def _certificate(self, config: EksIngressConfig) -> tuple[pulumi.Output[str], Any]:
        if config.certificate_arn is not None:
            return pulumi.Output.from_input(config.certificate_arn), []
        certificate = aws.acm.Certificate(self.child_name("certificate"), domain_name=f"*.{config.domain}",
                                          validation_method="DNS", tags=self.tags("certificate"),
                                          opts=self.child_opts())  # fmt: skip
        records = certificate.domain_validation_options.apply(
            lambda options: [{"name": o.resource_record_name, "type": o.resource_record_type, "value": o.resource_record_value}
                             for o in options or []])  # fmt: skip
        if config.hosted_zone_id is None:  # validated once someone creates `records` in the domain's DNS
            return certificate.arn, records
        option = certificate.domain_validation_options[0]
        record = aws.route53.Record(self.child_name("certificate-validation"), zone_id=config.hosted_zone_id,
                                    name=option.resource_record_name, type=option.resource_record_type,
                                    records=[option.resource_record_value], ttl=60, allow_overwrite=True,
                                    opts=self.child_opts())  # fmt: skip
        validation = aws.acm.CertificateValidation(self.child_name("certificate"), certificate_arn=certificate.arn,
                                                   validation_record_fqdns=[record.fqdn], opts=self.child_opts())  # fmt: skip
        return validation.certificate_arn, records


@dataclass(frozen=True)
class NginxEntryArgs:
    config: PrivateIngressConfig
    inference: InferenceConfig
    deployments: tuple[ModelDeploymentConfig, ...]  # the exposed ones on the private cloud
    version: str
    k8s_provider: k8s.Provider
    serving: pulumi.Resource
    tls_certificate: pulumi.Input[str] | None = None  # PEM, when cert-manager doesn't issue
    tls_key: pulumi.Input[str] | None = None


TLS_SECRET = "inference-ingress-tls"


class NginxEntry(PlatformComponent):
    """ingress-nginx (TLS 1.3 only, forwarded client identity, the servers' body and timeout
    limits) and an Ingress per exposed deployment; the certificate from cert-manager or from
    Pulumi secrets.

    Outputs: ``hosts`` (deployment → URL).
    """

    def __init__(self, name: str, args: NginxEntryArgs, tags: TagContext, provider: aws.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        config = args.config
        max_body = max(d.server.max_body_bytes for d in args.deployments)
        timeout = int(max(d.server.request_timeout_seconds for d in args.deployments)) + 10
        values = policies.nginx_values(config, max_body, timeout)
        super().__init__("platform:ingress:NginxEntry", name, name, tags, provider, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        controller = k8s.helm.v3.Release(
            self.child_name("controller"), name="ingress-nginx", chart="ingress-nginx", version=config.chart_version,
            repository_opts={"repo": policies.INGRESS_NGINX_CHARTS}, namespace=args.inference.ingress_namespace,
            create_namespace=True, values=values, opts=k8s_opts,
        )  # fmt: skip
        after = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[controller, args.serving]))
        annotations: dict[str, Any] = {}
        if config.cert_manager_issuer is not None:
            annotations["cert-manager.io/cluster-issuer"] = config.cert_manager_issuer
        else:
            kubernetes.declare(self.child_name("tls"), {
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": TLS_SECRET, "namespace": args.inference.namespace},
                "stringData": {"tls.crt": pulumi.Output.secret(args.tls_certificate),
                                "tls.key": pulumi.Output.secret(args.tls_key)}}, after)  # fmt: skip
        self.hosts: dict[str, str] = {}
        for deployment in args.deployments:
            secret = f"{deployment.name}-tls" if config.cert_manager_issuer is not None else TLS_SECRET
            manifest = policies.ingress(deployment, args.inference, args.version, config.class_name, config.domain,
                                        annotations, tls_secret=secret)  # fmt: skip
            kubernetes.declare(self.child_name(deployment.name), manifest, after)
            self.hosts[deployment.name] = f"https://{policies.host(deployment, config.domain)}"
        self.register_outputs({"hosts": self.hosts})
