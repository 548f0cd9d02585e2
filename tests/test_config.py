"""Config validation: every rule, and the exact shape of the messages users see."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from components.config import (
    GPU_FAMILIES_WITHOUT_INSTANCE_STORE,
    GPU_INSTANCE_FAMILIES,
    ConfigError,
    ConfigModel,
    PlatformConfig,
    Secret,
    TagConfig,
    parse_config,
    secret_config_keys,
)
from platformctl.project import engine_text

SOURCE = "stacks/Pulumi.prod.yaml"
BASE: dict[str, Any] = {
    "platform:environment": "prod",
    "platform:ha": True,
    "platform:aws": {"region": "us-east-1"},
    "platform:tags": {"costCenter": "ml", "owner": "team@example.com"},
    "platform:network": {"availabilityZones": ["us-east-1a", "us-east-1b", "us-east-1c"]},
}


def engine(config: dict[str, Any]) -> dict[str, str]:
    return {key: engine_text(value) for key, value in config.items()}


def parse(overrides: dict[str, Any] | None = None, drop: tuple[str, ...] = (), secrets=()) -> PlatformConfig:
    config = {**BASE, **(overrides or {})}
    for key in drop:
        config.pop(key)
    result = parse_config(engine(config), set(secrets), SOURCE)
    assert isinstance(result, PlatformConfig)
    return result


def problems(overrides: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(overrides, drop)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: invalid platform configuration")
    return info.value.problems


def network(**keys: Any) -> dict[str, Any]:
    return {"platform:network": {**BASE["platform:network"], **keys}}


def test_valid_config_parses_with_defaults_applied():
    config = parse()
    assert config.environment == "prod"
    assert config.ha is True
    assert config.network.vpc_cidr == ipaddress.IPv4Network("10.0.0.0/16")
    assert config.network.interface_endpoints == ["ecr.api", "ecr.dkr"]
    assert config.network.flow_logs.retention_days == 30
    assert config.nat_gateway_mode == "perAz"


def test_engine_strings_are_coerced_like_pulumi_passes_them():
    config = parse({"platform:ha": "false"})
    assert config.ha is False
    assert config.nat_gateway_mode == "single"


def test_default_azs_follow_the_region():
    config = parse({"platform:aws": {"region": "eu-west-1"}, "platform:network": {}})
    assert config.network.availability_zones == ["eu-west-1a", "eu-west-1b"]


def test_one_az_is_refused_naming_file_key_value_and_rule():
    [problem] = problems(network(availabilityZones=["us-east-1a"]))
    assert problem == (
        'platform:network.availabilityZones = ["us-east-1a"]: must list at least 2 availability zones: '
        "EKS and the subnet layout need two"
    )


def test_az_outside_the_region_is_refused_by_index():
    [problem] = problems(network(availabilityZones=["us-east-1a", "us-west-2b"]))
    assert problem.startswith('platform:network.availabilityZones[1] = "us-west-2b": is not an availability zone')


def test_single_nat_in_an_ha_environment_is_refused():
    [problem] = problems(network(natGateways="single"))
    assert problem.startswith('platform:network.natGateways = "single": must be perAz in an environment with ha: true')


def test_single_nat_is_allowed_without_ha():
    assert parse({"platform:ha": False, **network(natGateways="single")}).nat_gateway_mode == "single"


def test_unknown_nested_key_suggests_the_right_one():
    [problem] = problems(network(vpcCdir="10.1.0.0/16"))
    assert problem.startswith("platform:network.vpcCdir: unknown key; did you mean vpcCidr?")


def test_unknown_top_level_key_suggests_the_right_one():
    [problem] = problems({"platform:netwrk": {}})
    assert problem.startswith("platform:netwrk: unknown key; did you mean platform:network?")


def test_other_namespaces_are_not_ours_to_judge():
    assert parse({"aws:region": "us-west-2", "kubernetes:context": "x"}).environment == "prod"


def test_missing_required_key_is_named_with_its_meaning():
    [problem] = problems(drop=("platform:tags",))
    assert problem.startswith("platform:tags: required key is missing (Ownership and cost-allocation tags.)")


def test_wrong_type_names_the_value():
    [problem] = problems({"platform:ha": "maybe"})
    assert problem.startswith('platform:ha = "maybe": Input should be a valid boolean')


def test_public_vpc_cidr_is_refused():
    [problem] = problems(network(vpcCidr="8.8.0.0/16"))
    assert problem == 'platform:network.vpcCidr = "8.8.0.0/16": must lie inside RFC 1918 space (10/8, 172.16/12 or 192.168/16)'


def test_subnets_that_do_not_fit_are_refused_on_the_vpc_cidr():
    [problem] = problems(network(vpcCidr="10.0.0.0/20"))
    assert problem.startswith('platform:network.vpcCidr = "10.0.0.0/20": 4 private subnets of /19 need a /17 block')


def test_more_azs_than_slots_is_refused():
    azs = [f"us-east-1{c}" for c in "abcde"]
    [problem] = problems(network(availabilityZones=azs))
    assert "lists 5 AZs but platform:network.azSlots is 4" in problem


def test_retention_must_be_a_cloudwatch_value():
    [problem] = problems(network(flowLogs={"retentionDays": 10}))
    assert problem.startswith("platform:network.flowLogs.retentionDays = 10: CloudWatch Logs accepts only")


def test_extra_tags_may_not_override_standard_keys():
    [problem] = problems({"platform:tags": {**BASE["platform:tags"], "extra": {"owner": "someone-else"}}})
    assert "tag key 'owner' is set by the platform" in problem


@pytest.mark.parametrize("extra, message", [
    ({"team=ml": "x"}, "tag key 'team=ml' contains '='"),
    ({"team": " ml"}, "tag 'team': leading or trailing spaces would be trimmed"),
])
def test_extra_tags_the_load_balancer_would_change_are_refused(extra, message):
    [problem] = problems({"platform:tags": {**BASE["platform:tags"], "extra": extra}})
    assert problem.startswith("platform:tags.extra") and message in problem


def _controller_reads(annotation: str) -> dict[str, str]:
    """The load balancer controller's stringMap parsing (pkg/annotations/parser.go): split at
    commas, trim, skip empties, split each pair at its first `=`."""
    pairs = [part.strip() for part in annotation.split(",") if part.strip()]
    return dict(pair.split("=", 1) for pair in pairs)


@given(st.dictionaries(st.text(alphabet="ab _.:/=+-@1", min_size=1, max_size=8),
                       st.text(alphabet="ab _.:/=+-@1", max_size=8), max_size=4))
def test_every_accepted_extra_tag_reaches_the_load_balancer_unchanged(extra):
    from components.ingress.policies import alb_tags_annotation

    try:
        tags = TagConfig(cost_center="ml", owner="team", extra=extra)
    except ValueError:
        return  # refused with a message (tested above)
    assert _controller_reads(alb_tags_annotation(tags.extra)) == tags.extra


def test_invalid_json_object_is_reported_not_crashed():
    raw = engine(BASE)
    raw["platform:network"] = "{not json"
    with pytest.raises(ConfigError, match=r"platform:network: is not a valid object/list"):
        parse_config(raw, set(), SOURCE)


def test_every_problem_is_reported_at_once():
    found = problems({"platform:environment": "Prod!", **network(flowLogs={"retentionDays": 10})})
    assert len(found) == 2
    assert 'platform:environment = "Prod!": must be 2-16 lower-case letters, digits or \'-\', starting with a letter' in found


class _WithSecret(ConfigModel):
    environment: str
    vpn_pre_shared_key: Secret


class _WithNestedSecret(ConfigModel):
    class Vpn(ConfigModel):
        peer: str
        pre_shared_key: Secret

    vpn: Vpn


def test_secret_keys_are_found_at_any_depth():
    assert secret_config_keys(_WithSecret) == ["vpnPreSharedKey"]
    assert secret_config_keys(_WithNestedSecret) == ["vpn"]


def test_a_plaintext_secret_is_a_config_error():
    raw = {"platform:environment": "dev", "platform:vpnPreSharedKey": "hunter2"}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, set(), "stacks/Pulumi.dev.yaml", _WithSecret)
    [problem] = info.value.problems
    assert problem.startswith("platform:vpnPreSharedKey: holds a secret but is stored in plaintext")
    assert "hunter2" not in str(info.value)


def test_an_encrypted_secret_is_accepted_and_hidden():
    raw = {"platform:environment": "dev", "platform:vpnPreSharedKey": "hunter2"}
    config = parse_config(raw, {"platform:vpnPreSharedKey"}, "stacks/Pulumi.dev.yaml", _WithSecret)
    assert config.vpn_pre_shared_key.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(config)


def test_a_bad_secret_value_is_reported_without_showing_it():
    raw = {"platform:environment": "dev", "platform:vpn": '{"peer": "x", "preSharedKey": 42}'}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, {"platform:vpn"}, "stacks/Pulumi.dev.yaml", _WithNestedSecret)
    assert "42" not in str(info.value)
    assert "platform:vpn.preSharedKey = [secret]" in str(info.value)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_checked_in_stack_file_is_valid(project, stack):
    from platformctl.project import read_stack_config

    raw, secrets = read_stack_config(project, stack)
    config = parse_config(raw, secrets, f"stacks/Pulumi.{stack}.yaml")
    assert config.environment == stack
    data = yaml.safe_load((project.stack_config_dir / f"Pulumi.{stack}.yaml").read_text())
    assert data["config"]["platform:network"]["vpcCidr"] == str(config.network.vpc_cidr)


def test_config_errors_print_without_a_traceback_under_pulumi():
    import pulumi

    # The Python language host logs a RunError's message alone; other exceptions get a traceback.
    assert issubclass(ConfigError, pulumi.RunError)


# ------------------------------------------------------------------- EKS and GPU rules


def gpu(**sections: Any) -> dict[str, Any]:
    return {"platform:gpu": sections}


def test_non_gpu_instance_types_are_refused_by_key_path():
    found = problems(gpu(spot={"instanceTypes": ["g6.xlarge", "m7i.large", "g5.xlarge"]}))
    assert found == [
        'platform:gpu.spot.instanceTypes[1] = "m7i.large": m7i.large is not an NVIDIA GPU instance type; '
        "GPU pools take only the families " + ", ".join(sorted(GPU_INSTANCE_FAMILIES))
    ]
    [problem] = problems(gpu(reserved={"count": 1, "instanceType": "g5g.xlarge"}))
    assert problem.startswith('platform:gpu.reserved.instanceType = "g5g.xlarge": g5g.xlarge is not an NVIDIA GPU')


def test_spot_pool_needs_three_gpu_types():
    [problem] = problems(gpu(spot={"instanceTypes": ["g6.xlarge", "g5.xlarge"]}))
    assert problem.startswith("platform:gpu.spot.instanceTypes = ")
    assert "at least 3 items" in problem


def test_reserved_count_may_not_exceed_the_group_max():
    [problem] = problems(gpu(reserved={"count": 3, "maxSize": 2}))
    assert problem == "platform:gpu.reserved.count = 3: must be <= maxSize (2)"


def test_sizes_must_be_ordered():
    [problem] = problems(gpu(spot={"minSize": 2, "desiredSize": 1, "maxSize": 4}))
    assert problem == "platform:gpu.spot.desiredSize = 1: needs minSize <= desiredSize <= maxSize (got 2 <= 1 <= 4)"
    [problem] = problems({"platform:eks": {"systemNodes": {"minSize": 5, "desiredSize": 5, "maxSize": 4}}})
    assert problem.startswith("platform:eks.systemNodes.minSize = 5: needs minSize <= desiredSize <= maxSize")


def test_reservation_az_must_be_a_network_az():
    [problem] = problems(gpu(reserved={"count": 1, "availabilityZone": "us-east-1d"}))
    assert problem == (
        'platform:gpu.reserved.availabilityZone = "us-east-1d": must be one of platform:network.availabilityZones '
        "(us-east-1a, us-east-1b, us-east-1c)"
    )


def test_reservation_az_defaults_to_the_first_network_az():
    assert parse(gpu(reserved={"count": 1})).reserved_gpu_az == "us-east-1a"


def test_device_plugin_image_must_be_pinned():
    for image in ("nvcr.io/nvidia/k8s-device-plugin", "nvcr.io/nvidia/k8s-device-plugin:latest"):
        [problem] = problems(gpu(devicePluginImage=image))
        assert problem == f'platform:gpu.devicePluginImage = "{image}": must pin a version tag or digest (not :latest)'
    assert parse(gpu(devicePluginImage="registry:5000/nvidia/plugin@sha256:" + "a" * 64))


def test_eks_version_and_public_endpoint_rules():
    [problem] = problems({"platform:eks": {"version": "1.27"}})
    assert problem == 'platform:eks.version = "1.27": must be an EKS Kubernetes version written 1.NN, at least 1.29'
    [problem] = problems({"platform:eks": {"endpointPublicAccess": True}})
    assert problem.startswith("platform:eks.publicAccessCidrs = []: must name the networks")
    [problem] = problems({"platform:eks": {"endpointPublicAccess": True, "publicAccessCidrs": ["0.0.0.0/0"]}})
    assert problem.startswith('platform:eks.publicAccessCidrs[0] = "0.0.0.0/0": opens the API to the internet')


def test_addon_versions_must_be_pinned_builds():
    [problem] = problems({"platform:eks": {"addons": {"coredns": "latest"}}})
    assert problem.startswith('platform:eks.addons.coredns = "latest": String should match pattern')


sizes = st.integers(min_value=0, max_value=20)


@given(sizes, sizes, sizes)
def test_group_sizes_are_accepted_exactly_when_ordered(min_size, desired, max_size):
    section = gpu(spot={"minSize": min_size, "desiredSize": desired, "maxSize": max_size})
    try:
        config = parse(section)
    except ConfigError as error:
        assert not min_size <= desired <= max_size
        assert all(p.startswith("platform:gpu.spot.") for p in error.problems)
    else:
        assert min_size <= desired <= max_size
        assert config.gpu.spot.max_size == max_size


families = st.sampled_from(sorted(GPU_INSTANCE_FAMILIES | {"m7i", "c6i", "g5g", "g4ad", "inf2", "trn1", "t3"}))


@given(families, st.sampled_from(["xlarge", "2xlarge", "12xlarge", "48xlarge"]))
def test_reserved_type_is_accepted_exactly_for_nvidia_gpu_families(family, size):
    instance_type = f"{family}.{size}"
    try:
        config = parse(gpu(reserved={"count": 1, "instanceType": instance_type}))
    except ConfigError as error:
        if family in GPU_FAMILIES_WITHOUT_INSTANCE_STORE:  # a GPU type, but the default hot tier needs NVMe
            assert error.problems == [f'platform:storage.hot.source = "instanceStore": {instance_type} has no instance '
                                      "store: use source ebs or other GPU types"]  # fmt: skip
        else:
            assert family not in GPU_INSTANCE_FAMILIES
            assert error.problems[0].startswith("platform:gpu.reserved.instanceType")
    else:
        assert family in GPU_INSTANCE_FAMILIES
        assert config.gpu.reserved.instance_type == instance_type


@given(st.integers(min_value=0, max_value=10), st.one_of(st.none(), st.integers(min_value=0, max_value=10)))
def test_reserved_count_fits_its_group(count, max_size):
    reserved: dict[str, Any] = {"count": count}
    if max_size is not None:
        reserved["maxSize"] = max_size
    try:
        config = parse(gpu(reserved=reserved))
    except ConfigError:
        assert max_size is not None and count > max_size
    else:
        assert config.gpu.reserved.count <= config.gpu.reserved.group_max_size
