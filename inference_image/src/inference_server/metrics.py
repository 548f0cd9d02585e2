"""Prometheus metrics of one server (own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram(
            "inference_request_duration_seconds", "Request latency by route and status code",
            ["route", "status"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.time_to_first_token = Histogram(
            "inference_time_to_first_token_seconds", "From enqueue to the first generated token",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge("inference_queue_depth", "Requests waiting for a batch", registry=r)
        self.batch_size = Histogram(
            "inference_batch_size", "Requests per generate() batch", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.tokens_in = Counter("inference_prompt_tokens_total", "Prompt tokens accepted", registry=r)
        self.tokens_out = Counter("inference_generated_tokens_total", "Tokens generated", registry=r)
        self.rejected = Counter("inference_rejected_requests_total", "Requests refused, by reason", ["reason"], registry=r)
        self.model_load_seconds = Gauge("inference_model_load_seconds", "Time to verify and load the model", registry=r)
        self.gpu_memory_bytes = Gauge(
            "inference_gpu_memory_allocated_bytes", "CUDA memory allocated by the model process", ["device"], registry=r
        )

    def refresh_gpu_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                self.gpu_memory_bytes.labels(device=str(index)).set(torch.cuda.memory_allocated(index))
