"""GPU capacity as each stack plans it: reservation, pools, nodes, device plugin, cost facts."""

from __future__ import annotations

import email

import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from components.gpu import device_plugin_spec, scheduling
from components.gpu.userdata import kubelet_flags, node_config, node_user_data

from .conftest import STACKS

RESERVED = {"dev": 0, "staging": 1, "prod": 2}


def _group(plan, market):
    found = [g for g in plan.of_type("aws:autoscaling/group:Group") if g.name == f"gpu-{market}"]
    return found[0] if found else None


def _template(plan, market):
    [template] = [t for t in plan.of_type("aws:ec2/launchTemplate:LaunchTemplate") if t.name == f"gpu-{market}"]
    return template


def _tags(resource):
    return {t["key"]: t["value"] for t in resource.inputs["tags"]}


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_reservation_launch_template_and_group_agree(plans, stack):
    plan = plans[stack]
    [reservation] = plan.of_type("aws:ec2/capacityReservation:CapacityReservation")
    template = _template(plan, "reserved")
    group = _group(plan, "reserved")
    count = RESERVED[stack]
    assert reservation.inputs["instanceMatchCriteria"] == "targeted"
    assert reservation.inputs["instanceCount"] == count
    assert template.inputs["instanceType"] == reservation.inputs["instanceType"]
    # The template targets exactly this reservation.
    assert template.dependencies["capacityReservationSpecification"] == [reservation.urn]
    # The group's nodes land in the reservation's AZ, and fill it exactly.
    [subnet_urn] = group.dependencies["vpcZoneIdentifiers"]
    subnet = plan.by_urn()[subnet_urn]
    assert subnet.inputs["availabilityZone"] == reservation.inputs["availabilityZone"]
    assert subnet.inputs["tags"]["tier"] == "private"
    assert group.inputs["minSize"] == group.inputs["desiredCapacity"] == count <= group.inputs["maxSize"]
    assert template.urn in group.dependencies["launchTemplate"]


def test_dev_is_spot_only(plans):
    plan = plans["dev"]
    assert not plan.of_type("aws:ec2/capacityReservation:CapacityReservation")
    assert _group(plan, "reserved") is None
    assert _group(plan, "spot").inputs["maxSize"] == 2


@pytest.mark.parametrize("stack", STACKS)
def test_spot_pool_is_diversified_price_capacity_optimized_and_rebalancing(plans, stack):
    plan = plans[stack]
    group = _group(plan, "spot")
    policy = group.inputs["mixedInstancesPolicy"]
    types = [o["instanceType"] for o in policy["launchTemplate"]["overrides"]]
    assert len(types) >= 3 and len(set(types)) == len(types)
    assert policy["instancesDistribution"] == {
        "onDemandBaseCapacity": 0,
        "onDemandPercentageAboveBaseCapacity": 0,
        "spotAllocationStrategy": "price-capacity-optimized",
    }
    assert group.inputs["capacityRebalance"] is True
    # Spread over every private subnet, not just one AZ.
    private = {s.urn for s in plan.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["tier"] == "private"}
    assert set(group.dependencies["vpcZoneIdentifiers"]) == private


@pytest.mark.parametrize(
    ("stack", "market"), [(s, m) for s in STACKS for m in ("reserved", "spot") if m == "spot" or RESERVED[s]]
)
def test_gpu_nodes_have_imdsv2_encrypted_gp3_and_the_accelerated_ami(plans, stack, market):
    plan = plans[stack]
    template = _template(plan, market)
    assert template.inputs["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpPutResponseHopLimit": 1,
        "httpTokens": "required",
    }
    volume = template.inputs["blockDeviceMappings"][0]  # the root; a second is the ebs hot tier (tests/storage)
    assert volume["deviceName"] == "/dev/xvda"
    assert volume["ebs"] == {"deleteOnTermination": "true", "encrypted": "true", "volumeSize": 200, "volumeType": "gp3"}
    # The AMI comes from the EKS accelerated-AMI SSM parameter (a placeholder offline).
    assert template.inputs["imageId"] == "offline-plan-ssm-placeholder"


@pytest.mark.parametrize("stack", STACKS)
def test_groups_advertise_labels_taint_and_drain_before_terminate(plans, stack):
    plan = plans[stack]
    for market in ("reserved", "spot"):
        group = _group(plan, market)
        if group is None:
            continue
        tags = _tags(group)
        assert tags[f"k8s.io/cluster-autoscaler/node-template/label/{scheduling.CAPACITY_TYPE_LABEL}"] == market
        assert tags["k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"] == "true:NoSchedule"
        assert tags["aws-node-termination-handler/managed"] == "true"
        [hook] = group.inputs["initialLifecycleHooks"]
        assert hook["lifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"


def test_user_data_joins_with_labels_and_the_gpu_taint():
    text = node_user_data(
        "c", "https://api", "Q0E=", "172.20.0.0/16", scheduling.node_labels("reserved"), [scheduling.GPU_TAINT]
    )
    message = email.message_from_string(text)
    assert message.is_multipart()
    [part] = message.get_payload()
    assert part["Content-Type"] == "application/node.eks.aws"
    config = yaml.safe_load(part.get_payload())
    assert config["kind"] == "NodeConfig"
    assert config["spec"]["cluster"] == {
        "name": "c", "apiServerEndpoint": "https://api", "certificateAuthority": "Q0E=", "cidr": "172.20.0.0/16"
    }
    assert config["spec"]["kubelet"]["flags"] == [
        "--node-labels=capacity-type=reserved,platform/gpu=true",
        "--register-with-taints=nvidia.com/gpu=true:NoSchedule",
    ]


label_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@given(st.dictionaries(label_text, label_text, min_size=1, max_size=5))
def test_kubelet_label_flag_round_trips(labels):
    [flag] = kubelet_flags(labels, [])
    parsed = dict(pair.split("=", 1) for pair in flag.removeprefix("--node-labels=").split(","))
    assert parsed == labels
    assert node_config("c", "e", "ca", "cidr", labels, [])["spec"]["kubelet"]["flags"] == [flag]


@pytest.mark.parametrize("stack", STACKS)
def test_device_plugin_runs_on_gpu_nodes_and_is_a_valid_daemonset(plans, stack):
    plan = plans[stack]
    [daemonset] = [r for r in plan.of_type("kubernetes:apps/v1:DaemonSet") if r.name.startswith("gpu-")]
    manifest = daemonset.inputs
    assert manifest["apiVersion"] == "apps/v1" and manifest["kind"] == "DaemonSet"
    pod = manifest["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {scheduling.GPU_NODE_LABEL: "true"}
    assert pod["containers"][0]["image"] == "nvcr.io/nvidia/k8s-device-plugin:v0.17.2"
    # The object the cluster would receive, checked against Kubernetes' own schema.
    kubernetes_validate.validate(manifest, "1.33.0", strict=True)


def test_kubernetes_validate_rejects_a_broken_daemonset():
    spec = device_plugin_spec("nvcr.io/nvidia/k8s-device-plugin:v0.17.2")
    spec["template"]["spec"]["containers"][0]["imagee"] = "typo"
    manifest = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"}, "spec": spec}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, "1.33.0", strict=True)


@pytest.mark.parametrize("stack", STACKS)
def test_node_termination_handler_runs_in_queue_mode_with_irsa(plans, stack):
    plan = plans[stack]
    [release] = [r for r in plan.of_type("kubernetes:helm.sh/v3:Release") if r.name.startswith("gpu-")]
    values = release.inputs["values"]
    assert release.inputs["chart"] == "aws-node-termination-handler"
    assert release.inputs["version"] == "0.27.2"
    assert values["enableSqsTerminationDraining"] is True
    [queue] = plan.of_type("aws:sqs/queue:Queue")
    assert queue.urn in release.dependencies["values"]
    [role] = [r for r in plan.of_type("aws:iam/role:Role") if r.name == "gpu-nth"]
    assert role.urn in release.dependencies["values"]
    assert values["nodeSelector"] == {"node-role": "system"}


@pytest.mark.parametrize("stack", STACKS)
def test_gpu_nodes_join_through_an_ec2_linux_access_entry(plans, stack):
    plan = plans[stack]
    [entry] = [e for e in plan.of_type("aws:eks/accessEntry:AccessEntry") if e.name == "gpu-nodes"]
    assert entry.inputs["type"] == "EC2_LINUX"
    [role] = [r for r in plan.of_type("aws:iam/role:Role") if r.name == "gpu-nodes"]
    assert entry.dependencies["principalArn"] == [role.urn]


@pytest.mark.parametrize("stack", STACKS)
def test_cost_facts_state_market_type_count_and_az(plans, stack):
    plan = plans[stack]
    [component] = plan.of_type("platform:gpu:CapacityPool")
    facts = {f["pool"]: f for f in component.outputs["capacityFacts"]}
    spot = facts["gpu-spot"]
    group = _group(plan, "spot")
    assert spot["market"] == "spot"
    assert spot["instanceTypes"] == [o["instanceType"] for o in group.inputs["mixedInstancesPolicy"]["launchTemplate"]["overrides"]]
    assert (spot["minSize"], spot["desiredSize"], spot["maxSize"]) == (
        group.inputs["minSize"], group.inputs["desiredCapacity"], group.inputs["maxSize"]
    )
    assert spot["hoursPerMonth"] == 730
    if RESERVED[stack]:
        [reservation] = plan.of_type("aws:ec2/capacityReservation:CapacityReservation")
        reserved = facts["gpu-reserved"]
        assert reserved["market"] == "reserved"
        assert reserved["instanceTypes"] == [reservation.inputs["instanceType"]]
        assert reserved["reservedCount"] == reservation.inputs["instanceCount"]
        assert reserved["availabilityZones"] == [reservation.inputs["availabilityZone"]]
    else:
        assert "gpu-reserved" not in facts
    [cluster] = plan.of_type("platform:eks:Cluster")
    [system] = cluster.outputs["capacityFacts"]
    assert system["market"] == "on-demand" and system["pool"] == "system"


def test_scheduling_contract_is_exported_and_matches_the_node_labels(plans):
    plan = plans["prod"]
    exported = plan.stack_outputs["gpuScheduling"]
    assert exported == scheduling.contract(2)
    for market in ("reserved", "spot"):
        tags = _tags(_group(plan, market))
        for key, value in exported["labels"][market].items():
            assert tags[f"k8s.io/cluster-autoscaler/node-template/label/{key}"] == value
    reserved_pref = exported["podScheduling"]["reserved"]["affinity"]["nodeAffinity"]
    preferred = reserved_pref["preferredDuringSchedulingIgnoredDuringExecution"][0]["preference"]
    assert preferred["matchExpressions"][0]["values"] == ["reserved"]


@given(
    st.integers(min_value=0, max_value=64),
    st.integers(min_value=0, max_value=16),
    st.sampled_from([1, 2, 4, 8]),
    st.sampled_from([1, 2, 4, 8]),
)
def test_replica_split_fills_reserved_first_and_loses_nothing(total, reserved_nodes, per_replica, per_node):
    split = scheduling.split_replicas(total, reserved_nodes, per_replica, per_node)
    assert split["reserved"] + split["spot"] == total
    slots = reserved_nodes * (per_node // per_replica)
    assert split["reserved"] == min(total, slots)
    assert split["spot"] >= 0
