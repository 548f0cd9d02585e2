"""Grafana dashboards (pure): JSON models the Grafana sidecar loads from labelled ConfigMaps.

Every panel query is PromQL over the same metrics the rules read; the tests check each one
with promtool and against the exporters, so a typo fails the build, not the dashboard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from components.gpu.scheduling import CAPACITY_TYPE_LABEL, GPU_NODE_LABEL

REQ = "inference_request_duration_seconds"


def _label(name: str) -> str:
    """kube-state-metrics' name for a node label (``label_`` + non-alphanumerics as ``_``)."""
    return "label_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


# kube-state-metrics exports these node labels (kube-prometheus-stack values, monitoring.py).
NODE_LABELS = (GPU_NODE_LABEL, CAPACITY_TYPE_LABEL)
CAPACITY = _label(CAPACITY_TYPE_LABEL)
GPU = _label(GPU_NODE_LABEL)

DASHBOARDS: dict[str, tuple[str, list[tuple[str, str, str, str]]]] = {
    # uid: (title, [(panel title, unit, expr, legend)])
    "platform-inference": ("Inference", [
        ("Requests per second", "reqps", f"sum by (namespace) (rate({REQ}_count[5m]))", "{{namespace}}"),
        ("Latency P50", "s", f"histogram_quantile(0.5, sum by (namespace, le) (rate({REQ}_bucket[5m])))", "{{namespace}}"),
        ("Latency P99", "s", f"histogram_quantile(0.99, sum by (namespace, le) (rate({REQ}_bucket[5m])))", "{{namespace}}"),
        ("Time to first token P95", "s",
         "histogram_quantile(0.95, sum by (namespace, le) (rate(inference_time_to_first_token_seconds_bucket[5m])))",
         "{{namespace}}"),
        ("Batch size P50", "short", "histogram_quantile(0.5, sum by (le) (rate(inference_batch_size_bucket[5m])))", "batch"),
        ("Queue depth", "short", "max by (pod) (inference_queue_depth)", "{{pod}}"),
        ("Error ratio (5xx)", "percentunit", "inference:request_errors:ratio_rate5m", "{{namespace}}"),
        ("Refused by reason", "reqps", "sum by (reason) (rate(inference_rejected_requests_total[5m]))", "{{reason}}"),
        ("Tokens per second", "short", "sum(rate(inference_generated_tokens_total[5m]))", "generated"),
        ("GPU memory allocated by servers", "bytes", "sum by (pod) (inference_gpu_memory_allocated_bytes)", "{{pod}}"),
    ]),
    "platform-capacity": ("GPU capacity", [
        ("GPU nodes by capacity type", "short", f'count by ({CAPACITY}) (kube_node_labels{{{GPU}="true"}})', f"{{{{{CAPACITY}}}}}"),
        ("GPU nodes not ready", "short",
         f'sum(kube_node_status_condition{{condition="Ready", status="true"}} * on (node) group_left kube_node_labels{{{GPU}="true"}} == 0)'
         " or vector(0)", "not ready"),
        ("GPU utilisation", "percent", "avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)", "{{Hostname}}"),
        ("GPU memory used", "percentunit", "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)", "{{Hostname}} {{gpu}}"),
        ("XID errors", "short", "max by (Hostname) (DCGM_FI_DEV_XID_ERRORS)", "{{Hostname}}"),
    ]),
    "platform-mirror": ("Model mirror", [
        ("Hours since the last successful sync", "h",
         '(time() - kube_cronjob_status_last_successful_time{namespace="model-mirror", cronjob="mirror-sync"}) / 3600', "sync age"),
        ("Failed sync jobs", "short", 'sum(kube_job_status_failed{namespace="model-mirror", job_name=~"mirror-sync-.*"})', "failed"),
    ]),
}  # fmt: skip


Dashboard = tuple[str, str, Sequence[tuple[str, str, str, str]]]  # (uid, title, panels)


def all_dashboards(extra: Sequence[Dashboard] = ()) -> list[Dashboard]:
    """The platform's dashboards plus ``extra`` (ExportedSignals.dashboard): a new board, or,
    under an existing uid, more panels for it (spot interruptions on the capacity board)."""
    boards = {uid: (title, list(panels)) for uid, (title, panels) in DASHBOARDS.items()}
    for uid, title, panels in extra:
        if uid in boards:
            boards[uid][1].extend(panels)
        else:
            boards[uid] = (title, list(panels))
    return [(uid, title, panels) for uid, (title, panels) in boards.items()]


def dashboard(uid: str, title: str, panels: Sequence[tuple[str, str, str, str]]) -> dict[str, Any]:
    return {
        "uid": uid, "title": f"Platform / {title}", "tags": ["platform"], "schemaVersion": 39, "editable": False,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "1m",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]},
        "panels": [
            {"id": index + 1, "type": "timeseries", "title": panel_title,
             "gridPos": {"x": (index % 2) * 12, "y": (index // 2) * 8, "w": 12, "h": 8},
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
             "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}]}
            for index, (panel_title, unit, expr, legend) in enumerate(panels)
        ],
    }  # fmt: skip


def config_maps(namespace: str, label: tuple[str, str], extra: Sequence[Dashboard] = ()) -> list[dict[str, Any]]:
    """One ConfigMap per dashboard, labelled for the Grafana sidecar."""
    return [{"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": f"dashboard-{uid}", "namespace": namespace, "labels": {label[0]: label[1]}},
             "data": {f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=1, sort_keys=True)}}
            for uid, title, panels in all_dashboards(extra)]  # fmt: skip


def expressions(extra: Sequence[Dashboard] = ()) -> list[str]:
    return [expr for _, _, panels in all_dashboards(extra) for _, _, expr, _ in panels]
