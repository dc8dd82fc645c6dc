"""Helpers for tests and the benchmark (not used by any command): a uvicorn server on a background thread
and a streaming load generator for the OpenAI-compatible API.

with ServerThread(build_app(engine, settings)) as base_url:
    run_load(base_url, concurrency=8, requests_per_client=4)
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import statistics
import threading
import time

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on `host`."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """Run an ASGI app with uvicorn in a background thread on loopback (tests, benchmarks, notebooks).

    with ServerThread(app) as base_url: ...   # base_url like http://127.0.0.1:PORT
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 30.0):
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(
            app, host=host, port=self.port, log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.start_timeout = start_timeout

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _has_text(sse_line: str) -> bool:
    try:
        choices = json.loads(sse_line.removeprefix("data: ")).get("choices") or [{}]
    except json.JSONDecodeError:
        return False
    return bool(choices[0].get("delta", {}).get("content"))


def run_load(
    base_url: str,
    concurrency: int,
    requests_per_client: int,
    *,
    model: str | None = None,
    api_key: str | None = None,
    max_tokens: int = 16,
    prompt: str = "hello, how are you?",
    timeout: float = 120.0,
) -> dict[str, float]:
    """A bounded load test: `concurrency` streaming clients, each sending `requests_per_client` requests.

    A request counts as an error unless it returns 200 and its SSE stream ends with `data: [DONE]`.

    Returns:
        {"rps", "p50_ms", "p95_ms", "ttft_p50_ms", "errors", "requests", "seconds"}: latency is the full
        stream (first byte sent to [DONE]); ttft is time to the first content chunk.
    """
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def main() -> dict[str, float]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, limits=limits
        ) as client:
            mid = model
            if mid is None:
                r = await client.get("/v1/models")
                r.raise_for_status()
                mid = r.json()["data"][0]["id"]
            latencies: list[float] = []
            ttfts: list[float] = []
            errors: list[str] = []

            async def one(i: int) -> None:
                body = {
                    "model": mid,
                    "messages": [{"role": "user", "content": f"{prompt} #{i}"}],
                    "stream": True,
                    "max_tokens": max_tokens,
                    "temperature": 0,
                }
                t0 = time.perf_counter()
                first = None
                try:
                    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                        if r.status_code != 200:
                            errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                            return
                        last = ""
                        async for line in r.aiter_lines():
                            if not line:
                                continue
                            last = line
                            if first is None and line != "data: [DONE]" and _has_text(line):
                                first = time.perf_counter()
                        if last != "data: [DONE]":
                            errors.append(f"stream ended without [DONE]: {last[:200]!r}")
                            return
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    return
                latencies.append((time.perf_counter() - t0) * 1000)
                ttfts.append(((first or time.perf_counter()) - t0) * 1000)

            async def client_loop(c: int) -> None:
                for k in range(requests_per_client):
                    await one(c * requests_per_client + k)

            t0 = time.perf_counter()
            await asyncio.gather(*(client_loop(c) for c in range(concurrency)))
            seconds = time.perf_counter() - t0

        def pct(xs: list[float], q: float) -> float:
            if not xs:
                return float("nan")
            if len(xs) == 1:
                return xs[0]
            return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]

        for e in errors[:5]:
            logger.warning("load error: %s", e)
        return {
            "requests": concurrency * requests_per_client,
            "errors": len(errors),
            "seconds": round(seconds, 3),
            "rps": round(len(latencies) / seconds, 3) if seconds > 0 else 0.0,
            "p50_ms": round(pct(latencies, 50), 1),
            "p95_ms": round(pct(latencies, 95), 1),
            "ttft_p50_ms": round(pct(ttfts, 50), 1),
        }

    return asyncio.run(main())
