"""Which async HTTP client ``connection.asession()`` should be built on: httpx or aiohttp, each
as a plain client with a fixed ``Authorization`` header, against requests on threads.

A local keep-alive HTTP server in a process of its own answers a small JSON body. Each contender
makes the same GETs, sequentially (one coroutine) and ``--concurrency`` at a time, interleaved
in rounds so that drift on the machine hits every contender alike. It prints, per contender, the
median over rounds of the wall time and of this process's CPU time per call (the server's CPU
is not ours), and the ratio of each to the fastest.

    pip install -e ".[bench]"
    python benchmarks/bench_async_clients.py
    python benchmarks/bench_async_clients.py --calls 5000 --rounds 7 --concurrency 20

Run by hand; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from typing import Any

# The same small JSON answer, from the same keep-alive handler, as bench_session.py's (this
# directory is on sys.path when a benchmark runs as a script).
from bench_session import BODY, JSONHandler

HEADERS = {"Authorization": "Bearer a-fixed-token-of-forty-characters-long-x"}


def serve() -> None:
    """Serve until killed; the first line printed is the URL."""
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer(("127.0.0.1", 0), JSONHandler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}/api/v1/recipes/", flush=True)
    server.serve_forever()


# Contenders: each makes `calls` GETs, `concurrency` at a time, and checks every answer.


async def with_httpx(url: str, calls: int, concurrency: int) -> None:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=HEADERS, limits=limits, timeout=10) as client:

        async def one() -> None:
            response = await client.get(url)
            assert response.status_code == 200 and response.content == BODY

        await _in_batches(one, calls, concurrency)


async def with_aiohttp(url: str, calls: int, concurrency: int) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(
        headers=HEADERS, connector=connector, timeout=timeout
    ) as client:

        async def one() -> None:
            async with client.get(url) as response:
                assert response.status == 200 and await response.read() == BODY

        await _in_batches(one, calls, concurrency)


async def _in_batches(one: Callable[[], Awaitable[None]], calls: int, concurrency: int) -> None:
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def with_requests_threads(url: str, calls: int, concurrency: int) -> None:
    import threading

    import requests

    local = threading.local()

    def one(_: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.headers.update(HEADERS)
        response = session.get(url, timeout=10)
        assert response.status_code == 200 and response.content == BODY

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(calls)))


CONTENDERS: dict[str, Callable[[str, int, int], Any]] = {
    "httpx.AsyncClient": with_httpx,
    "aiohttp.ClientSession": with_aiohttp,
    "requests on threads": with_requests_threads,
}


def measure(name: str, url: str, calls: int, concurrency: int) -> tuple[float, float]:
    """Wall and CPU microseconds per call of one contender's run."""
    run = CONTENDERS[name]
    cpu, wall = time.process_time(), time.perf_counter()
    if asyncio.iscoroutinefunction(run):
        asyncio.run(run(url, calls, concurrency))
    else:
        run(url, calls, concurrency)
    return (
        (time.perf_counter() - wall) / calls * 1e6,
        (time.process_time() - cpu) / calls * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    server = subprocess.Popen(  # noqa: S603 - this same script, fixed arguments
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        print(
            f"{args.calls} GETs per run, {args.rounds} rounds interleaved, {os.cpu_count()} "
            f"cores, Python {sys.version.split()[0]}; medians per call"
        )
        for concurrency in args.concurrency:
            for name in CONTENDERS:  # warm-up: imports, connections
                measure(name, url, 200, concurrency)
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONTENDERS}
            for _ in range(args.rounds):
                for name in CONTENDERS:
                    results[name].append(measure(name, url, args.calls, concurrency))
            walls = {n: statistics.median(w for w, _ in r) for n, r in results.items()}
            cpus = {n: statistics.median(c for _, c in r) for n, r in results.items()}
            fastest_wall, fastest_cpu = min(walls.values()), min(cpus.values())
            print(f"\nconcurrency {concurrency}")
            print(f"| {'client':<22} | wall µs/call | ratio | our CPU µs/call | ratio |")
            print(f"|{'-' * 24}|-------------:|------:|----------------:|------:|")
            for name in CONTENDERS:
                print(
                    f"| {name:<22} | {walls[name]:12.0f} | {walls[name] / fastest_wall:5.2f} "
                    f"| {cpus[name]:15.0f} | {cpus[name] / fastest_cpu:5.2f} |"
                )
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
