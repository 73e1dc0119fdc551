"""Per-call overhead of ``await connection.asession()`` while the token is valid, against a
plain ``aiohttp.ClientSession`` with a fixed ``Authorization`` header (the floor) and Authlib's
``AsyncOAuth2Client`` (httpx) holding a valid token.

A keep-alive server in a process of its own (bench_async_clients.py's) answers a small JSON
body. In one event loop, each contender makes the same GETs and reads the body: one at a time,
then ``--concurrency`` at a time (coroutines gathered), interleaved in rounds whose order
rotates, so drift on the machine hits every contender alike. Per contender it prints medians
over rounds, per call: wall time; CPU time of the event loop's thread (``time.thread_time``);
and CPU time of this whole process, which is the loop's thread plus any thread a client hands
work to (the server's CPU is not ours in either). Ratios are to the floor; the targets are
``connection.asession()`` at most 1.05x the floor, and no slower than Authlib.

It counts the SQL statements run while opening the session and during its calls (target: 0).
Then a breakdown, one call at a time, timed in place with thread CPU time: the loop's CPU
inside aiohttp's ``ClientSession._request`` and ``ClientResponse.read``, the rest (the
caller's wrapper: ours, or ``async with`` for the floor), and how many hand-offs to executor
threads a call makes (aiohttp's ``trust_env`` made two a call, which is why the session reads
the environment's proxy itself). The probe's own wrappers add a few µs to every row of it.

    pip install -e ".[bench]"
    python benchmarks/bench_asession.py
    python benchmarks/bench_asession.py --calls 3000 --rounds 7 --concurrency 1 20
    python benchmarks/bench_asession.py --instructions

On a shared machine the CPU figures move by 10% from run to run, more than the 5% target.
``--instructions`` counts instead, with valgrind's callgrind, which is repeatable whatever else
the machine does: each contender runs alone under callgrind twice, with ``--calls`` and with
1,000 calls more, and the difference over 1,000 is its instructions per call (start-up and
Django set-up cancel out). The server runs untraced.

Run by hand; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

# This directory is on sys.path when a benchmark runs as a script; bench_session puts the
# repository's root there too.
from bench_async_clients import _in_batches, serve
from bench_refresh import StatementCounter
from bench_session import BODY, setup_django

if TYPE_CHECKING:  # imported for real once Django is set up
    from oauth_connect.services.asession import AsyncConnectionSession

TOKEN = "bench-access-token"  # what bench_session.setup_django stores
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
PLAIN, OURS, AUTHLIB = "aiohttp.ClientSession (floor)", "connection.asession()", "Authlib"

Call = Callable[[], Awaitable[bytes]]


class Sample(NamedTuple):
    """Microseconds per call."""

    wall: float
    loop_cpu: float
    process_cpu: float


async def run(call: Call, calls: int, concurrency: int) -> Sample:
    async def one() -> None:
        if await call() != BODY:
            raise AssertionError("unexpected body")

    gc.collect()
    wall, thread, process = time.perf_counter(), time.thread_time(), time.process_time()
    await _in_batches(one, calls, concurrency)
    return Sample(
        (time.perf_counter() - wall) / calls * 1e6,
        (time.thread_time() - thread) / calls * 1e6,
        (time.process_time() - process) / calls * 1e6,
    )


def medians(samples: list[Sample]) -> Sample:
    return Sample(*(statistics.median(column) for column in zip(*samples, strict=True)))


class Probe:
    """Thread CPU inside aiohttp's request and read (on the loop's thread), and the hand-offs
    to executor threads: patched in place while it is entered."""

    def __init__(self) -> None:
        self.request = self.read = 0.0
        self.hops = 0

    def _timed_async(self, original: Any, field: str) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return await original(*args, **kwargs)
            finally:
                setattr(self, field, getattr(self, field) + time.thread_time() - start)

        return timed

    def __enter__(self) -> Probe:
        import aiohttp

        self._loop = loop = asyncio.get_running_loop()
        run_in_executor = loop.run_in_executor

        def counted(*args: Any) -> Any:
            self.hops += 1
            return run_in_executor(*args)

        session, response = aiohttp.ClientSession, aiohttp.ClientResponse
        wrapped = [
            (session, "_request", self._timed_async(session._request, "request")),
            (response, "read", self._timed_async(response.read, "read")),
        ]
        self._originals = [(owner, name, getattr(owner, name)) for owner, name, _ in wrapped]
        for owner, name, wrapper in wrapped:
            setattr(owner, name, wrapper)
        loop.run_in_executor = counted  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in self._originals:
            setattr(owner, name, original)
        del self._loop.run_in_executor  # the loop's own method shows through again


class Contenders(NamedTuple):
    calls: dict[str, Call]
    opening_statements: int  # SQL run by ``await connection.asession()``
    close: Callable[[], Awaitable[None]]


async def contenders(url: str, connection: Any) -> Contenders:
    import aiohttp
    from authlib.integrations.httpx_client import AsyncOAuth2Client  # type: ignore[import-untyped]

    plain = aiohttp.ClientSession()
    with StatementCounter() as opening:
        api: AsyncConnectionSession = await connection.asession()
    token = {
        "access_token": TOKEN,
        "refresh_token": "bench-refresh-token",
        "token_type": "Bearer",
        "expires_in": 3600,
        "expires_at": int(time.time()) + 3600,
    }
    authlib = AsyncOAuth2Client(
        "bench-client", "bench-secret", token=token, token_endpoint=url + "oauth/token/"
    )
    full_url = url + "recipes/"

    async def with_plain() -> bytes:
        async with plain.get(full_url, headers=HEADERS) as response:
            return await response.read()

    async def with_ours() -> bytes:
        response = await api.get("recipes/")
        return await response.read()  # already read within the deadline: the same bytes

    async def with_authlib() -> bytes:
        response = await authlib.get(full_url)
        return response.content  # type: ignore[no-any-return]

    async def close() -> None:
        await plain.close()
        await authlib.aclose()

    calls: dict[str, Call] = {PLAIN: with_plain, OURS: with_ours, AUTHLIB: with_authlib}
    return Contenders(calls, opening.statements, close)


class Runner:
    """Runs a contender, counting the SQL statements of our session's runs."""

    def __init__(self, contenders: Contenders) -> None:
        self.calls = contenders.calls
        self.sql = StatementCounter()
        self.ours_calls = 0

    async def __call__(self, name: str, calls: int, concurrency: int) -> Sample:
        if name != OURS:
            return await run(self.calls[name], calls, concurrency)
        self.ours_calls += calls
        with self.sql:
            return await run(self.calls[name], calls, concurrency)


async def bench(url: str, connection: Any, args: argparse.Namespace) -> None:
    contending = await contenders(url, connection)
    measure, names = Runner(contending), list(contending.calls)
    print(
        f"{args.calls} GETs per contender per round, {args.rounds} rounds interleaved; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; medians, µs per call"
    )
    for concurrency in args.concurrency:
        samples: dict[str, list[Sample]] = {name: [] for name in names}
        for name in names:  # warm-up: imports, connections, caches
            await measure(name, 200, concurrency)
        for number in range(args.rounds):
            for name in names[number % len(names) :] + names[: number % len(names)]:
                samples[name].append(await measure(name, args.calls, concurrency))
        report(f"{concurrency} at a time", {name: medians(s) for name, s in samples.items()})
    print(
        f"\nSQL statements opening connection.asession(): {contending.opening_statements}; "
        f"during its {measure.ours_calls} calls: {measure.sql.statements}"
    )
    await breakdown(measure, args)
    await contending.close()


def report(title: str, results: dict[str, Sample]) -> None:
    floor = results[PLAIN]
    print(f"\n{title}")
    print(
        f"| {'client':<30} | wall | ratio | loop-thread CPU | ratio | process CPU | ratio |\n"
        f"|{'-' * 32}|-----:|------:|----------------:|------:|------------:|------:|"
    )
    for name, r in results.items():
        print(
            f"| {name:<30} | {r.wall:4.0f} | {r.wall / floor.wall:5.2f} "
            f"| {r.loop_cpu:15.1f} | {r.loop_cpu / floor.loop_cpu:5.2f} "
            f"| {r.process_cpu:11.1f} | {r.process_cpu / floor.process_cpu:5.2f} |"
        )


async def breakdown(measure: Runner, args: argparse.Namespace) -> None:
    """One call at a time, under the probe: where the loop thread's CPU goes."""
    rows: dict[str, list[list[float]]] = {name: [] for name in (PLAIN, OURS)}
    for _ in range(args.rounds):
        for name, row in rows.items():
            with Probe() as probe:
                sample = await measure(name, args.calls, 1)
            per_call = [x / args.calls * 1e6 for x in (probe.request, probe.read)]
            rest = sample.loop_cpu - per_call[0] - per_call[1]
            hops = probe.hops / args.calls
            row.append([sample.loop_cpu, *per_call, rest, hops])
            row[-1] += [sample.process_cpu, sample.wall]
    print(
        "\nBreakdown, 1 at a time, timed in place (µs per call; medians; 'rest' is the "
        "caller's own code: our session's wrapper, or the floor's `async with`)\n"
        f"| {'client':<30} | loop CPU | in _request | in read | rest "
        "| hand-offs | process CPU | wall |\n"
        f"|{'-' * 32}|---------:|------------:|--------:|-----:"
        "|----------:|------------:|-----:|"
    )
    table = {n: [statistics.median(c) for c in zip(*r, strict=True)] for n, r in rows.items()}
    for name, (loop, request, read, rest, hops, process, wall) in table.items():
        print(
            f"| {name:<30} | {loop:8.1f} | {request:11.1f} | {read:7.1f} | {rest:4.1f} "
            f"| {hops:9.1f} | {process:11.1f} | {wall:4.0f} |"
        )
    print(
        f"our wrapper's own cost (rest, ours less the floor's): "
        f"{table[OURS][3] - table[PLAIN][3]:.1f} µs a call"
    )


KEYS = {"plain": PLAIN, "ours": OURS, "authlib": AUTHLIB}


async def only(url: str, connection: Any, name: str, calls: int) -> None:
    """One contender, ``calls`` calls after a warm-up: what callgrind counts."""
    contending = await contenders(url, connection)
    call = contending.calls[name]
    for _ in range(200 + calls):
        await call()
    await contending.close()


def instructions(calls: int) -> None:
    """Instructions per call of each contender, counted by callgrind."""

    def collected(key: str, count: int) -> int:
        run = subprocess.run(  # noqa: S603 - valgrind on this same script, fixed arguments
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
            + [__file__, "--only", key, "--calls", str(count)],
            capture_output=True,
            text=True,
            check=True,
            # The same hashes each run: dict and set layouts move the count by a percent.
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        return int(run.stderr.rsplit("Collected : ", 1)[1].split()[0])

    per_call = {
        KEYS[key]: (collected(key, calls + 1000) - collected(key, calls)) / 1000 for key in KEYS
    }
    floor = per_call[PLAIN]
    print(f"Instructions per call (callgrind; {calls} and {calls + 1000} calls, one at a time)")
    print(f"| {'client':<30} | instructions | ratio |\n|{'-' * 32}|-------------:|------:|")
    for name, count in per_call.items():
        print(f"| {name:<30} | {count:12,.0f} | {count / floor:5.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="GETs per contender per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 20])
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions with callgrind instead"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=KEYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    if args.instructions:
        instructions(args.calls)
        return
    # The API in a process of its own: its CPU is neither the loop thread's nor this process's.
    server = subprocess.Popen(  # noqa: S603 - this same script, fixed arguments
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().strip().removesuffix("recipes/")  # type: ignore[union-attr]
        connection = setup_django(url)  # a valid token: a refresh is a week away
        if args.only:
            asyncio.run(only(url, connection, KEYS[args.only], args.calls))
        else:
            asyncio.run(bench(url, connection, args))  # the session belongs to this loop
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
