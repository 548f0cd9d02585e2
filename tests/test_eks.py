"""The EKS cluster as each stack plans it, and its pure IAM/kubeconfig helpers."""

from __future__ import annotations

import json

import pytest

from components.config import EKS_LOG_TYPES
from components.eks.policies import irsa_trust_policy, kubeconfig, service_trust_policy

from .conftest import STACKS


def _cluster(plan):
    [cluster] = plan.of_type("aws:eks/cluster:Cluster")
    return cluster


@pytest.mark.parametrize("stack", STACKS)
def test_cluster_is_private_encrypted_logged_and_uses_access_entries(plans, stack):
    plan = plans[stack]
    cluster = _cluster(plan)
    inputs = cluster.inputs
    assert inputs["name"] == f"platform-{stack}-eks"
    assert inputs["version"] == "1.33"
    assert inputs["vpcConfig"]["endpointPrivateAccess"] is True
    assert inputs["vpcConfig"]["endpointPublicAccess"] is False
    assert inputs["accessConfig"]["authenticationMode"] == "API"
    assert inputs["encryptionConfig"]["resources"] == ["secrets"]
    [key] = [k for k in plan.of_type("aws:kms/key:Key") if k.name == "eks-secrets"]
    assert key.inputs["enableKeyRotation"] is True
    assert cluster.dependencies["encryptionConfig"] == [key.urn]
    assert sorted(inputs["enabledClusterLogTypes"]) == sorted(EKS_LOG_TYPES)
    assert inputs["upgradePolicy"] == {"supportType": "STANDARD"}
    # Private subnets only: every subnet the cluster gets is a private one.
    private = {s.urn for s in plan.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["tier"] == "private"}
    assert set(cluster.dependencies["vpcConfig"]) == private
    # The log group exists first, with our retention.
    [log_group] = [g for g in plan.of_type("aws:cloudwatch/logGroup:LogGroup") if g.name == "eks-control-plane"]
    assert log_group.inputs["name"] == f"/aws/eks/platform-{stack}-eks/cluster"
    assert log_group.urn in cluster.depends_on


def test_oidc_provider_for_irsa(plans):
    plan = plans["prod"]
    [oidc] = plan.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert oidc.inputs["clientIdLists"] == ["sts.amazonaws.com"]
    assert oidc.dependencies["url"] == [_cluster(plan).urn]


@pytest.mark.parametrize("stack", STACKS)
def test_addons_are_pinned_and_ordered_around_the_nodes(plans, stack):
    plan = plans[stack]
    addons = {a.inputs["addonName"]: a for a in plan.of_type("aws:eks/addon:Addon")}
    assert set(addons) == {"vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent"}
    for addon in addons.values():
        assert addon.inputs["addonVersion"].startswith("v") and "eksbuild" in addon.inputs["addonVersion"]
    [node_group] = plan.of_type("aws:eks/nodeGroup:NodeGroup")
    for early in ("vpc-cni", "kube-proxy", "eks-pod-identity-agent"):
        assert addons[early].urn in node_group.depends_on
    assert node_group.urn in addons["coredns"].depends_on


@pytest.mark.parametrize("stack", STACKS)
def test_system_node_group_is_on_demand_cpu_with_imdsv2_and_encrypted_root(plans, stack):
    plan = plans[stack]
    [group] = plan.of_type("aws:eks/nodeGroup:NodeGroup")
    assert group.inputs["capacityType"] == "ON_DEMAND"
    assert group.inputs["amiType"] == "AL2023_x86_64_STANDARD"
    assert group.inputs["labels"] == {"node-role": "system"}
    [template] = [t for t in plan.of_type("aws:ec2/launchTemplate:LaunchTemplate") if t.name == "eks-system-nodes"]
    assert template.inputs["metadataOptions"]["httpTokens"] == "required"
    assert template.inputs["metadataOptions"]["httpPutResponseHopLimit"] == 1
    [volume] = template.inputs["blockDeviceMappings"]
    assert volume["ebs"]["encrypted"] == "true" and volume["ebs"]["volumeType"] == "gp3"
    expected = {"dev": (1, 1, 2), "staging": (2, 2, 4), "prod": (3, 3, 6)}[stack]
    scaling = group.inputs["scalingConfig"]
    assert (scaling["minSize"], scaling["desiredSize"], scaling["maxSize"]) == expected


def test_prod_admins_get_cluster_admin_through_access_entries(plans):
    plan = plans["prod"]
    entries = [e for e in plan.of_type("aws:eks/accessEntry:AccessEntry") if e.inputs["type"] == "STANDARD"]
    assert [e.inputs["principalArn"] for e in entries] == ["arn:aws:iam::111122223333:role/platform-admin"]
    [association] = plan.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert association.inputs["policyArn"].endswith("/AmazonEKSClusterAdminPolicy")
    assert association.inputs["accessScope"] == {"type": "cluster"}
    assert not [e for e in plans["dev"].of_type("aws:eks/accessEntry:AccessEntry") if e.inputs["type"] == "STANDARD"]


def test_kubernetes_resources_use_the_clusters_provider(plans):
    plan = plans["prod"]
    [k8s_provider] = plan.of_type("pulumi:providers:kubernetes")
    for resource in plan.resources:
        if resource.type.startswith("kubernetes:"):
            assert resource.provider == k8s_provider.urn


def test_irsa_trust_is_scoped_to_one_service_account():
    doc = json.loads(
        irsa_trust_policy("arn:aws:iam::1:oidc-provider/oidc.eks/id/X", "https://oidc.eks/id/X", "kube-system", "nth")
    )
    [statement] = doc["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"]["StringEquals"] == {
        "oidc.eks/id/X:sub": "system:serviceaccount:kube-system:nth",
        "oidc.eks/id/X:aud": "sts.amazonaws.com",
    }


def test_service_trust_and_kubeconfig():
    assert json.loads(service_trust_policy("eks.amazonaws.com"))["Statement"][0]["Principal"] == {
        "Service": "eks.amazonaws.com"
    }
    config = json.loads(kubeconfig("c", "https://x", "Q0E=", "us-east-1"))
    assert config["clusters"][0]["cluster"] == {"server": "https://x", "certificate-authority-data": "Q0E="}
    assert config["users"][0]["user"]["exec"]["args"] == ["eks", "get-token", "--cluster-name", "c", "--region", "us-east-1"]
