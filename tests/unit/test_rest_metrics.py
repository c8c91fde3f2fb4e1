"""The REST proxy's request and refusal counters, through a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loopchain.rest.metrics import RestMetrics


def _samples(metrics: RestMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_refusals_are_4xx_and_503_answers_never_a_failure_of_the_proxy() -> None:
    metrics = RestMetrics()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["status"]))

    app = web.Application(middlewares=[metrics.middleware()])
    app.router.add_get("/s/{status}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            for status in (200, 400, 400, 413, 404, 500, 502, 503, 504):
                async with session.get(f"http://127.0.0.1:{port}/s/{status}") as response:
                    assert response.status == status
    finally:
        await runner.cleanup()
    samples = _samples(metrics)

    def refused(reason: str) -> float:
        return samples.get(("loopchain_rest_refused_total", frozenset({("reason", reason)})), 0)

    assert refused("invalid") == 2 and refused("too_large") == 1 and refused("unavailable") == 1
    assert refused("other") == 0  # 500, 502 and 504 are the proxy's or the peer's failures
    total = sum(v for (name, _), v in samples.items() if name == "loopchain_rest_refused_total")
    assert total == 4  # 404 is no refusal either
    route = ("route", "/s/{status}")
    for status, count in (("400", 2), ("500", 1), ("504", 1), ("200", 1)):
        labels = frozenset({route, ("method", "GET"), ("status", status)})
        assert samples[("loopchain_rest_requests_total", labels)] == count
