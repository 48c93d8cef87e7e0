"""Prometheus metrics in a registry owned by one app (never the process-global one)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distilmarco.server.batching import BatchReport

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_INPUT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    """Every series the server exports; ``render`` gives the text exposition format."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "distilmarco_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "distilmarco_http_request_duration_seconds",
            "Time from request start to response end",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("distilmarco_errors", "Error responses by type", ["type"], registry=r)
        self.queue_depth = Gauge(
            "distilmarco_queue_depth", "Requests waiting for the inference worker", registry=r
        )
        self.queue_tokens = Gauge(
            "distilmarco_queue_tokens", "Tokens waiting for the inference worker", registry=r
        )
        self.batch_tokens = Histogram(
            "distilmarco_batch_tokens",
            "Real tokens per worker batch",
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.batch_inputs = Histogram(
            "distilmarco_batch_inputs",
            "Inputs per worker batch",
            buckets=_INPUT_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "distilmarco_batch_requests",
            "Requests sharing one worker batch",
            buckets=_INPUT_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "distilmarco_inference_duration_seconds",
            "Model time per worker batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.padded_tokens = Counter(
            "distilmarco_padded_tokens", "Tokens computed including padding", registry=r
        )
        self.tokens = Counter("distilmarco_tokens", "Real tokens embedded", registry=r)
        self.inputs = Counter("distilmarco_inputs", "Texts embedded", registry=r)
        self.truncated = Counter(
            "distilmarco_truncated_inputs",
            "Inputs cut to the model's maximum length",
            registry=r,
        )
        self.rejected = Counter(
            "distilmarco_rejected_requests",
            "Requests refused because the queue was full or its wait too long",
            registry=r,
        )
        self.abandoned = Counter(
            "distilmarco_abandoned_requests",
            "Requests dropped because their client disconnected",
            registry=r,
        )
        self.ready = Gauge("distilmarco_ready", "1 once warm-up has finished", registry=r)

    def watch_queue(self, depth: Callable[[], float], tokens: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)
        self.queue_tokens.set_function(tokens)

    def observe_batch(self, report: BatchReport) -> None:
        self.batch_tokens.observe(report.tokens)
        self.batch_inputs.observe(report.inputs)
        self.batch_requests.observe(report.requests)
        self.inference_seconds.observe(report.seconds)
        self.padded_tokens.inc(report.padded_tokens)
        self.tokens.inc(report.tokens)
        self.inputs.inc(report.inputs)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request and times it, labelled by route template (bounded cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, known_paths: Callable[[], set[str]]) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or scope.get("path", "")
            if path not in self.known_paths():
                path = "other"
            self.metrics.requests.labels(scope.get("method", ""), path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
            if status >= 400:
                self.metrics.errors.labels(str(status)).inc()
