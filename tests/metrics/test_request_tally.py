"""codeb.metrics.requests.RequestTally: per-thread request counts, added up at a scrape, give
exactly what prometheus_client's own Counter and Histogram give for the same requests."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from codeb.metrics import LATENCY_BUCKETS
from codeb.metrics.requests import LATENCY, REQUESTS, RequestTally

REQUESTS_HELP = "HTTP requests served, by method, route template and status"
LATENCY_HELP = "Time to answer an HTTP request, by method and route template"

# On bucket bounds, between them, beyond the last one, zero.
OBSERVATIONS = [
    ("GET", "/api/projects", "200", 0.005),
    ("GET", "/api/projects", "200", 0.0051),
    ("GET", "/api/projects", "404", 0.0),
    ("POST", "/api/projects", "201", 2.5),
    ("GET", "(unmatched)", "404", 31.0),
    ("DELETE", "/api/projects/{project}", "202", 0.3),
]


def _lines(registry: CollectorRegistry) -> list[str]:
    """The exposition's lines, values rounded (sums added in another order differ in the
    last bits). prometheus_client's own histogram also writes a `_created` sample per series;
    the tally writes the counter's only."""
    lines = []
    for line in generate_latest(registry).decode().splitlines():
        if "_created" in line:
            continue
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            line = f"{name} {float(value):.9g}"
        lines.append(line)
    return sorted(lines)


def test_the_exposition_is_prometheus_clients_own():
    reference = CollectorRegistry()
    counter = Counter(REQUESTS, REQUESTS_HELP, ["method", "route", "status"], registry=reference)
    histogram = Histogram(
        LATENCY, LATENCY_HELP, ["method", "route"], buckets=LATENCY_BUCKETS, registry=reference
    )
    tally = RequestTally(LATENCY_BUCKETS)
    registry = CollectorRegistry()
    registry.register(tally)
    for i, (method, route, status, seconds) in enumerate(OBSERVATIONS * 3):
        counter.labels(method, route, status).inc()
        histogram.labels(method, route).observe(seconds)
        if i % 2:  # half of them from other threads, each with its own tally
            thread = threading.Thread(target=tally.observe, args=(method, route, status, seconds))
            thread.start()
            thread.join()
        else:
            tally.observe(method, route, status, seconds)
    assert _lines(registry) == _lines(reference)


def test_no_request_is_lost_across_threads():
    tally = RequestTally(LATENCY_BUCKETS)
    threads, each = 8, 5000
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for n in range(each):
            tally.observe("GET", "/api/projects", "200" if n % 5 else "404", 0.001 * (n % 40))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    # Scrapes while the threads count: never an error, never more than was observed.
    seen = 0
    while any(worker.is_alive() for worker in workers):
        total = sum(sum(record[1:]) for record in tally.totals().values())
        assert seen <= total <= threads * each
        seen = total
    for worker in workers:
        worker.join()
    totals = tally.totals()
    assert sum(totals[("GET", "/api/projects", "200")][1:]) == threads * each * 4 // 5
    assert sum(totals[("GET", "/api/projects", "404")][1:]) == threads * each // 5
    expected_sum = threads * sum(0.001 * (n % 40) for n in range(each))
    got_sum = sum(record[0] for record in totals.values())
    assert abs(got_sum - expected_sum) < 1e-6


def test_the_known_methods_are_falcons():
    """codeb.metrics lists the methods HTTP defines without importing Falcon (below the HTTP
    layer); the list is Falcon's, so a method Falcon serves is never counted as (other)."""
    import falcon

    from codeb.metrics import KNOWN_METHODS

    assert set(falcon.COMBINED_METHODS) == KNOWN_METHODS
