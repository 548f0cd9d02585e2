"""Monthly cost of a stack from its offline plan, a price catalog and a usage file (pure).

No tool prices Pulumi programs (infracost/infracost#187, pulumi/pulumi#13004), so this
prices the plan ``platformctl plan --format json`` emits: each resource by its type, from
the versioned catalog (``catalog.json``: region, unit, price, source, date per entry) and
the stack's usage file (what a plan cannot know: GB stored, served, processed; the spot
discount). Resource types that cost nothing are declared free; anything neither priced
nor free is listed as unpriced, never silently zero.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

CATALOG = Path(__file__).parent / "catalog.json"

# No charge of their own (configuration, identity, wiring); Kubernetes objects run on nodes
# priced as instances; image builds run on the deploying machine.
FREE_TYPES = frozenset({
    "aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/route:Route", "aws:ec2/routeTable:RouteTable",
    "aws:ec2/routeTableAssociation:RouteTableAssociation", "aws:ec2/internetGateway:InternetGateway",
    "aws:ec2/securityGroup:SecurityGroup", "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
    "aws:ec2/launchTemplate:LaunchTemplate", "aws:ec2/flowLog:FlowLog", "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/instanceProfile:InstanceProfile", "aws:iam/openIdConnectProvider:OpenIdConnectProvider",
    "aws:eks/addon:Addon", "aws:eks/accessEntry:AccessEntry", "aws:eks/accessPolicyAssociation:AccessPolicyAssociation",
    "aws:ecr/lifecyclePolicy:LifecyclePolicy", "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls", "aws:s3/bucketPolicy:BucketPolicy",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketVersioning:BucketVersioning", "aws:sns/topicPolicy:TopicPolicy", "aws:sqs/queuePolicy:QueuePolicy",
    "aws:cloudwatch/eventRule:EventRule", "aws:cloudwatch/eventTarget:EventTarget",
    "aws:cloudfront/originAccessControl:OriginAccessControl", "aws:cloudfront/cachePolicy:CachePolicy",
    "aws:lambda/functionUrl:FunctionUrl", "aws:lambda/permission:Permission",
    "aws:costexplorer/costAllocationTag:CostAllocationTag", "aws:budgets/budget:Budget",
    "aws:bcmdata/export:Export", "aws:sns/topicSubscription:TopicSubscription",
    "docker-build:index:Image", "aws:ec2/networkInterface:NetworkInterface", "aws:ssm/parameter:Parameter",
    "random:index/randomPassword:RandomPassword", "aws:ec2/customerGateway:CustomerGateway",
    "aws:ec2transitgateway/transitGateway:TransitGateway", "aws:ec2transitgateway/routeTable:RouteTable",
    "aws:ec2transitgateway/routeTableAssociation:RouteTableAssociation",
    "aws:ec2transitgateway/routeTablePropagation:RouteTablePropagation", "aws:ec2transitgateway/route:Route",
    "aws:ec2/managedPrefixList:ManagedPrefixList", "aws:route53/resolverRule:ResolverRule",
    "aws:cloudwatch/logStream:LogStream", "aws:s3/bucketLogging:BucketLogging",
    "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration",
    "aws:route53/resolverRuleAssociation:ResolverRuleAssociation",
    "aws:acm/certificate:Certificate", "aws:acm/certificateValidation:CertificateValidation",  # public ACM: free
    "aws:kms/alias:Alias", "aws:athena/namedQuery:NamedQuery",
    "aws:iam/user:User", "aws:iam/userPolicy:UserPolicy", "aws:iam/accessKey:AccessKey",
    "aws:glue/catalogDatabase:CatalogDatabase", "aws:glue/catalogTable:CatalogTable",  # Glue's first million objects: free
})  # fmt: skip
# Priced per request or invocation: at this platform's volumes a few dollars at most, and
# not in the usage file; listed with the unpriced so the total never hides them.
REQUEST_PRICED = frozenset({
    "aws:lambda/function:Function", "aws:sqs/queue:Queue", "aws:sns/topic:Topic", "aws:cloudfront/function:Function",
    "aws:route53/record:Record",  # queries; the hosted zone is not this stack's
    "aws:athena/workgroup:Workgroup",  # per TB a query scans (capped by storage.auditQueryScanLimitGb)
})  # fmt: skip
ALB_INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"  # the AWS Load Balancer Controller makes an ALB per group


class UsageError(ValueError):
    """The usage file is unreadable or invalid; ``str()`` names the file and key."""


class Usage(BaseModel):
    """What the plan cannot know, per month (``stacks/usage/<stack>.yaml``)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    spot_discount: float = Field(default=0.6, ge=0, lt=1, description="Spot price as a fraction off on-demand.")
    nat_gb: float = Field(default=0, ge=0, description="GB processed by all NAT gateways.")
    cloudfront_gb_out: float = Field(default=0, ge=0, description="GB served by CloudFront.")
    s3: dict[str, dict[str, float]] = Field(default_factory=dict, description="Bucket logical name -> class -> GB.")
    s3_daily_gb: dict[str, float] = Field(
        default_factory=dict,
        description="Bucket logical name -> GB written a day (as stored); GB per class follow from its lifecycle rules.",
    )
    firehose_gb_per_day: dict[str, float] = Field(
        default_factory=dict, description="Delivery stream logical name -> GB ingested a day."
    )
    ecr_gb: dict[str, float] = Field(default_factory=dict, description="Repository logical name -> GB stored.")
    logs_gb: dict[str, float] = Field(default_factory=dict, description="Log group logical name -> GB ingested.")


def load_usage(path: Path) -> Usage:
    if not path.is_file():
        return Usage()
    try:
        return Usage.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from exc
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from exc


def load_catalog(path: Path = CATALOG) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class Line:
    component: str
    resource: str
    type: str
    monthly_usd: float
    detail: str


@dataclass
class Estimate:
    stack: str
    total_monthly: float
    components: dict[str, float]
    lines: list[Line]
    unpriced: list[dict[str, str]]
    usage_missing: list[str]
    assumptions: dict[str, Any]
    savings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["currency"] = "USD"
        return data


class _Pricer:
    def __init__(self, plan: dict[str, Any], catalog: dict[str, Any], usage: Usage) -> None:
        self.plan, self.catalog, self.usage = plan, catalog, usage
        self.hours = catalog["hoursPerMonth"]
        self.by_urn = {r["urn"]: r for r in plan["resources"]}
        self.facts = {f["pool"]: f for r in plan["resources"] if r["type"] == "platform:gpu:CapacityPool"
                      for f in (r.get("outputs") or {}).get("capacityFacts", [])}  # fmt: skip
        self.nat_count = sum(1 for r in plan["resources"] if r["type"] == "aws:ec2/natGateway:NatGateway")
        self.usage_missing: list[str] = []
        self.savings: dict[str, Any] = {}
        self.steady_state: dict[str, dict[str, float]] = {}  # tiered bucket -> storage class -> GB

    def item(self, key: str) -> float:
        return float(self.catalog["items"][key]["usd"])

    def instance(self, instance_type: str) -> float | None:
        entry = self.catalog["instances"].get(instance_type)
        return float(entry["usdPerHour"]) if entry else None

    def component(self, resource: dict[str, Any]) -> str:
        current = resource
        while current.get("parent") in self.by_urn and not self.by_urn[current["parent"]]["type"].startswith("pulumi:pulumi:Stack"):
            current = self.by_urn[current["parent"]]
        return current["name"] if current is not resource else "(stack)"

    def price(self, resource: dict[str, Any]) -> tuple[float, str] | None:
        """(monthly USD, how) for priced types; None when the type has no price here."""
        kind, inputs, name = resource["type"], resource["inputs"], resource["name"]
        hours = self.hours
        if kind == "aws:eks/cluster:Cluster":
            return self.item("eks-cluster-hour") * hours, f"{hours} h x ${self.item('eks-cluster-hour')}/h"
        if kind == "aws:eks/nodeGroup:NodeGroup":
            instance_type = inputs["instanceTypes"][0]
            count = inputs["scalingConfig"]["desiredSize"]
            hourly = self.instance(instance_type)
            if hourly is None:
                return None
            disk = self._launch_template_disk(resource)
            return (count * (hourly * hours + disk * self.item("ebs-gp3-gb-month")),
                    f"{count} x {instance_type} on-demand ${hourly}/h + {disk} GiB gp3 each")  # fmt: skip
        if kind == "aws:ec2/capacityReservation:CapacityReservation":
            count, instance_type = inputs["instanceCount"], inputs["instanceType"]
            hourly = self.instance(instance_type)
            if hourly is None:
                return None
            reserved = self.facts.get(name, {})
            unused = max(0, count - int(reserved.get("desiredSize", count)))
            note = f"; {unused} reserved instance(s) unused, still billed" if unused else "; fully used by the reserved pool"
            return count * hourly * hours, f"{count} x {instance_type} reserved, billed used or not, ${hourly}/h{note}"
        if kind == "aws:autoscaling/group:Group":
            return self._gpu_pool(name)
        if kind == "aws:ec2/natGateway:NatGateway":
            gb = self.usage.nat_gb / max(1, self.nat_count)
            if not self.usage.nat_gb:
                self.usage_missing.append(f"{name}: natGb (GB processed)")
            return (self.item("nat-gateway-hour") * hours + gb * self.item("nat-gateway-gb"),
                    f"{hours} h + {gb:g} GB processed")  # fmt: skip
        if kind == "aws:ec2/instance:Instance":
            template = self._launch_template(resource)
            instance_type = template.get("instanceType") or inputs.get("instanceType")
            hourly = self.instance(instance_type) if instance_type else None
            if hourly is None:
                return None
            disk = self._launch_template_disk(resource)
            return (hourly * hours + disk * self.item("ebs-gp3-gb-month"),
                    f"{instance_type} on-demand ${hourly}/h + {disk} GiB gp3")  # fmt: skip
        if kind == "aws:cloudwatch/metricAlarm:MetricAlarm":
            metrics = sum(1 for query in inputs.get("metricQueries") or [] if "metric" in query) or 1
            return metrics * self.item("cloudwatch-alarm-metric-month"), f"alarm over {metrics} metric(s)"
        if kind == "aws:ec2/eip:Eip":
            return self.item("public-ipv4-hour") * hours, "one public IPv4 address"
        if kind == "aws:ec2/vpcEndpoint:VpcEndpoint":
            if inputs.get("vpcEndpointType") != "Interface":
                return 0.0, "gateway endpoint: no charge"
            azs = len(inputs.get("subnetIds") or [])
            return azs * self.item("vpc-interface-endpoint-az-hour") * hours, f"interface endpoint in {azs} AZ(s)"
        if kind == "aws:ec2/vpnConnection:VpnConnection":
            if inputs.get("transitGatewayId"):
                # The connection's transit gateway attachment is billed too (it has no resource of its own).
                return ((self.item("vpn-connection-hour") + self.item("transit-gateway-attachment-hour")) * hours,
                        "one Site-to-Site VPN connection + its transit gateway attachment (data processing not estimated)")  # fmt: skip
            return self.item("vpn-connection-hour") * hours, "one Site-to-Site VPN connection"
        if kind == "aws:ec2transitgateway/vpcAttachment:VpcAttachment":
            return (self.item("transit-gateway-attachment-hour") * hours,
                    "one transit gateway attachment (data processing not estimated)")  # fmt: skip
        if kind == "aws:route53/resolverEndpoint:ResolverEndpoint":
            addresses = len(inputs.get("ipAddresses") or [])
            return (addresses * self.item("route53-resolver-endpoint-eni-hour") * hours,
                    f"Resolver endpoint with {addresses} IP addresses (queries not estimated)")  # fmt: skip
        if kind == "aws:lb/loadBalancer:LoadBalancer":
            return self.item("alb-hour") * hours, "load balancer hours (LCUs not estimated)"
        if kind == "aws:kms/key:Key":
            return self.item("kms-key-month"), "one customer managed key"
        if kind == "aws:wafv2/webAcl:WebAcl":
            rules = len(inputs.get("rules") or [])
            return (self.item("waf-web-acl-month") + rules * self.item("waf-rule-month"),
                    f"web ACL with {rules} rules (requests not estimated)")  # fmt: skip
        if kind == "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream":
            daily = self.usage.firehose_gb_per_day.get(name, 0.0)
            if not daily:
                self.usage_missing.append(f"{name}: firehoseGbPerDay.{name}")
            gb = daily * hours / 24
            per_gb = self.item("firehose-ingest-gb") + self.item("firehose-dynamic-partitioning-gb")
            return gb * per_gb, f"{gb:,.0f} GB ingested and partitioned a month (JQ hours, S3 requests not estimated)"
        if kind == "aws:s3/bucket:Bucket" and name in self.usage.s3_daily_gb:
            return self._tiered_bucket(resource, self.usage.s3_daily_gb[name])
        if kind == "aws:s3/bucket:Bucket":
            classes = self.usage.s3.get(name)
            if not classes:
                self.usage_missing.append(f"{name}: s3.{name} (GB per storage class)")
                return 0.0, "no usage given"
            return self._storage_classes(classes, f"s3.{name}"), ", ".join(f"{gb:g} GB {c}" for c, gb in classes.items())
        if kind == "aws:cloudfront/distribution:Distribution":
            if not self.usage.cloudfront_gb_out:
                self.usage_missing.append(f"{name}: cloudfrontGbOut")
            gb = self.usage.cloudfront_gb_out
            return gb * self.item("cloudfront-gb-out"), f"{gb:g} GB out (requests not estimated)"
        if kind == "aws:ecr/repository:Repository":
            gb = self.usage.ecr_gb.get(name, 0.0)
            if not gb:
                self.usage_missing.append(f"{name}: ecrGb.{name}")
            return gb * self.item("ecr-gb-month"), f"{gb:g} GB stored"
        if kind == "aws:cloudwatch/logGroup:LogGroup":
            gb = self.usage.logs_gb.get(name, 0.0)
            if not gb:
                self.usage_missing.append(f"{name}: logsGb.{name}")
            return gb * self.item("cloudwatch-logs-gb"), f"{gb:g} GB ingested (storage not estimated)"
        return None

    def _storage_classes(self, held: dict[str, float], usage_key: str) -> float:
        """Monthly USD of GB held per S3 storage class."""
        total = 0.0
        for storage_class, gb in held.items():
            key = f"s3-{storage_class}-gb-month"
            if key not in self.catalog["items"]:
                raise UsageError(f"usage {usage_key}: no price for storage class {storage_class}")
            total += gb * self.item(key)
        return total

    def _tiered_bucket(self, bucket: dict[str, Any], daily_gb: float) -> tuple[float, str]:
        """Steady-state GB per storage class from the bucket's lifecycle rules in the plan."""
        from components.storage.lifecycle import steady_state_gb

        rules = [r["inputs"].get("rules") or [] for r in self.by_urn.values()
                 if r["type"] == "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
                 and bucket["urn"] in r.get("dependencies", {}).get("bucket", [])]  # fmt: skip
        rule = next((rule for found in rules for rule in found if rule.get("status") == "Enabled"), {})
        transitions = [(t["storageClass"], int(t["days"])) for t in rule.get("transitions") or []]
        expire = (rule.get("expiration") or {}).get("days")
        held = steady_state_gb(daily_gb, transitions, int(expire) if expire is not None else None)
        total = self._storage_classes(held, f"s3DailyGb.{bucket['name']}")
        self.steady_state[bucket["name"]] = {c: round(gb, 1) for c, gb in held.items()}
        return total, f"{daily_gb:g} GB/day: " + ", ".join(f"{gb:,.0f} GB {c}" for c, gb in held.items())

    def _launch_template(self, resource: dict[str, Any]) -> dict[str, Any]:
        for urn in resource.get("dependencies", {}).get("launchTemplate", []):
            template = self.by_urn.get(urn)
            if template:
                return template["inputs"]
        return {}

    def _launch_template_disk(self, resource: dict[str, Any]) -> int:
        for device in self._launch_template(resource).get("blockDeviceMappings", []):
            return int(device.get("ebs", {}).get("volumeSize", 0))
        return 0

    def _gpu_pool(self, name: str) -> tuple[float, str] | None:
        facts = self.facts.get(name)
        if facts is None:
            return None
        count, hours, disk = int(facts["desiredSize"]), self.hours, int(facts.get("rootVolumeGib", 0))
        storage = count * disk * self.item("ebs-gp3-gb-month")
        if facts["market"] == "reserved":
            return storage, f"{count} instance(s) inside the capacity reservation (priced there) + {disk} GiB gp3 each"
        prices = [self.instance(t) for t in facts["instanceTypes"]]
        known = [p for p in prices if p is not None]
        if not known:
            return None
        on_demand = sum(known) / len(known)
        spot = on_demand * (1 - self.usage.spot_discount)
        self.savings[name] = {
            "instances": count, "onDemandMonthly": round(count * on_demand * hours, 2),
            "spotMonthly": round(count * spot * hours, 2), "savedFraction": self.usage.spot_discount,
        }  # fmt: skip
        return (count * spot * hours + storage,
                f"{count} x spot over {len(known)} types, mean on-demand ${on_demand:.4f}/h less "
                f"{self.usage.spot_discount:.0%} + {disk} GiB gp3 each")  # fmt: skip


def _alb_group(resource: dict[str, Any]) -> str | None:
    inputs = resource.get("inputs") or {}
    if (inputs.get("spec") or {}).get("ingressClassName") != "alb":
        return None
    annotations = (inputs.get("metadata") or {}).get("annotations") or {}
    return annotations.get("alb.ingress.kubernetes.io/group.name") or resource["name"]


def estimate(plan: dict[str, Any], catalog: dict[str, Any], usage: Usage) -> Estimate:
    pricer = _Pricer(plan, catalog, usage)
    lines: list[Line] = []
    unpriced: list[dict[str, str]] = []
    alb_groups: set[str] = set()
    for resource in plan["resources"]:
        kind = resource["type"]
        if kind == ALB_INGRESS and (group := _alb_group(resource)) is not None and group not in alb_groups:
            alb_groups.add(group)  # Ingresses of one group share one ALB, priced once
            lines.append(Line(pricer.component(resource), resource["name"], "aws:lb/loadBalancer:LoadBalancer (ingress)",
                              round(pricer.item("alb-hour") * pricer.hours, 2),
                              f"the ALB of ingress group {group} (LCUs not estimated)"))  # fmt: skip
            continue
        if not resource["custom"] or kind.startswith(("pulumi:providers:", "kubernetes:")) or kind in FREE_TYPES:
            continue
        component = pricer.component(resource)
        priced = pricer.price(resource)
        if priced is None:
            reason = "request-priced, not estimated" if kind in REQUEST_PRICED else "no price in the catalog"
            unpriced.append({"component": component, "resource": resource["name"], "type": kind, "reason": reason})
            continue
        usd, detail = priced
        lines.append(Line(component, resource["name"], kind, round(usd, 2), detail))
    components: dict[str, float] = {}
    for line in lines:
        components[line.component] = round(components.get(line.component, 0.0) + line.monthly_usd, 2)
    assumptions = {
        "catalog": {"version": catalog["version"], "region": catalog["region"]},
        "hoursPerMonth": catalog["hoursPerMonth"],
        "spotDiscount": usage.spot_discount,
        "usage": usage.model_dump(by_alias=True),
        "gpuPools": "desired size runs all month; spot priced at the mean on-demand price of its types less the discount",
        "tieredBucketsSteadyStateGb": pricer.steady_state,
    }
    return Estimate(
        stack=plan["stack"], total_monthly=round(sum(line.monthly_usd for line in lines), 2),
        components=dict(sorted(components.items())), lines=lines, unpriced=unpriced,
        usage_missing=sorted(set(pricer.usage_missing)), assumptions=assumptions, savings=pricer.savings,
    )  # fmt: skip


def compare(head: Estimate, base: Estimate) -> dict[str, Any]:
    names = sorted(set(head.components) | set(base.components))
    rows = [{"component": n, "base": base.components.get(n, 0.0), "head": head.components.get(n, 0.0),
             "delta": round(head.components.get(n, 0.0) - base.components.get(n, 0.0), 2)} for n in names]  # fmt: skip
    return {"stack": head.stack, "base_total": base.total_monthly, "head_total": head.total_monthly,
            "delta": round(head.total_monthly - base.total_monthly, 2), "components": rows}  # fmt: skip


def _usd(value: float) -> str:
    return f"${value:,.2f}"


def _signed(value: float) -> str:
    return ("+" if value > 0 else "-" if value < 0 else "±") + _usd(abs(value))


def markdown(head: Estimate, diff: dict[str, Any] | None = None) -> str:
    """The PR comment / README form."""
    out = [f"### Estimated monthly cost: `{head.stack}` — {_usd(head.total_monthly)}", ""]
    if diff is not None:
        out += [f"Change against the base: **{_signed(diff['delta'])}** per month "
                f"({_usd(diff['base_total'])} → {_usd(diff['head_total'])}).", "",
                "| component | base | head | delta |", "|---|---:|---:|---:|"]  # fmt: skip
        out += [f"| {r['component']} | {_usd(r['base'])} | {_usd(r['head'])} | {_signed(r['delta'])} |"
                for r in diff["components"] if r["base"] or r["head"]]  # fmt: skip
    else:
        out += ["| component | monthly |", "|---|---:|"]
        out += [f"| {name} | {_usd(usd)} |" for name, usd in head.components.items()]
    for pool, saving in head.savings.items():
        out += ["", f"Spot saving in `{pool}`: {_usd(saving['spotMonthly'])} instead of "
                f"{_usd(saving['onDemandMonthly'])} on demand ({saving['savedFraction']:.0%} less)."]  # fmt: skip
    if head.unpriced:
        listed = ", ".join(sorted({f"`{u['type']}`" for u in head.unpriced}))
        out += ["", f"Not in the total: {listed} (request-priced or without a catalog price)."]
    if head.usage_missing:
        out += ["", f"Usage not given (priced as zero): {len(head.usage_missing)} item(s); see `stacks/usage/`."]
    out += ["", f"Catalog {head.assumptions['catalog']['version']} ({head.assumptions['catalog']['region']}), "
            f"{head.assumptions['hoursPerMonth']} h/month; an estimate, not a bill."]  # fmt: skip
    return "\n".join(out) + "\n"
