"""Prometheus metrics: HTTP requests by view and status, sessions by status, vault blocks,
the warm pool.

Request metrics live in this process (daphne); the session gauge and the
``lap_vault_blocked_total`` counter (one per stored security event, raised by
whichever process pulled the records) are computed from the database at each
scrape, so they are right whichever process serves them.

The warm pool's state lives in the database and so do its metrics: sandboxes by harness and
state (``lap_pool_sandboxes``) and provision failures (``lap_pool_provision_failures_total``,
counted by the django-q2 workers that provision, whose own registries nobody scrapes) are
read at scrape. Claims are different: they run in the API request, in this process, so
``lap_pool_claims_total{outcome=hit|miss|broken}`` and the ``lap_pool_claim_seconds``
histogram are ordinary per-process metrics (``sandboxes.services``), and each daphne
replica reports its own claims, as Prometheus expects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from django.http import HttpRequest, HttpResponse
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pool.services import pool_provision_failures, pool_status
from sandboxes.services import session_counts_by_status
from vault.services import vault_blocked_count

REQUESTS = Counter("lap_http_requests_total", "HTTP requests served", ["view", "method", "status"])
LATENCY = Histogram(
    "lap_http_request_duration_seconds", "Time to answer an HTTP request", ["view", "method"]
)


def _sessions_gauge() -> GaugeMetricFamily:
    return GaugeMetricFamily("lap_sessions", "Sessions by status", labels=["status"])


class SessionsByStatus(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Without describe() the registry would call collect() (a query) at import time.
        yield _sessions_gauge()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = _sessions_gauge()
        for status, count in session_counts_by_status().items():
            gauge.add_metric([status], count)
        yield gauge


REGISTRY.register(SessionsByStatus())


def _blocked_counter() -> CounterMetricFamily:
    return CounterMetricFamily(
        "lap_vault_blocked", "Credentials the vault blocked from a host they are not allowed for"
    )


class VaultBlocked(Collector):
    def describe(self) -> Iterator[CounterMetricFamily]:
        yield _blocked_counter()

    def collect(self) -> Iterator[CounterMetricFamily]:
        counter = _blocked_counter()
        counter.add_metric([], vault_blocked_count())
        yield counter


REGISTRY.register(VaultBlocked())


def _pool_gauge() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "lap_pool_sandboxes",
        "Warm-pool sandboxes by harness and state (claimed: serving a session now)",
        labels=["harness", "state"],
    )


def _pool_failures() -> CounterMetricFamily:
    return CounterMetricFamily(
        "lap_pool_provision_failures",
        "Warm sandboxes whose provisioning failed",
        labels=["harness"],
    )


class Pool(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield _pool_gauge()
        yield _pool_failures()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        gauge = _pool_gauge()
        for harness, counts in pool_status().items():
            for state in ("warm", "provisioning", "claimed"):
                gauge.add_metric([harness, state], counts[state])
        yield gauge
        failures = _pool_failures()
        for harness, count in pool_provision_failures().items():
            failures.add_metric([harness], count)
        yield failures


REGISTRY.register(Pool())


class MetricsMiddleware:
    """Counts and times every request, labelled by the resolved view name."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = request.resolver_match
        # Unmatched paths share one label so random URLs cannot grow the series without bound.
        view = match.view_name if match is not None else "<unmatched>"
        LATENCY.labels(view, request.method).observe(time.perf_counter() - started)
        REQUESTS.labels(view, request.method, str(response.status_code)).inc()
        return response
