"""Goals, the printed table, and ``docs/benchmarks.md``, all from one results dict."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FIGURES",
    "GOALS",
    "REQUIRED_KEYS",
    "evaluate_goals",
    "render_markdown",
    "render_table",
]


@dataclass(frozen=True)
class Figure:
    key: str
    unit: str
    meaning: str


@dataclass(frozen=True)
class Goal:
    key: str
    op: str
    limit: float
    why: str

    @property
    def text(self) -> str:
        return f"{self.op} {self.limit:g}"

    def holds(self, value: float) -> bool:
        compare: Callable[[float, float], bool] = {"<=": operator.le, ">=": operator.ge}[self.op]
        return compare(value, self.limit)


FIGURES: tuple[Figure, ...] = (
    Figure(
        "closed_get_ratio_sync",
        "x",
        "`CacheProvider.get` (breaker closed, hit) divided by a raw redis-py `GET` of the same "
        "full key on the same client, pool and server, followed by the same "
        "`serializer.loads` the provider applies. 1.00 means the breaker, key prefixing, "
        "stats and error handling cost nothing measurable next to the round trip.",
    ),
    Figure(
        "closed_get_ratio_async",
        "x",
        "The same for `await CacheProvider.aget` against `await redis.asyncio.Redis.get` "
        "(+ the same decode) on the provider's own asyncio client.",
    ),
    Figure(
        "open_get_us",
        "µs",
        "One `CacheProvider.get` while the cache breaker is open: the miss answered "
        "without touching the network (the server's command counter is checked to "
        "stay still). Includes the ~0.02 µs of the timing loop.",
    ),
    Figure(
        "pybreaker_reject_us",
        "µs",
        "pybreaker 1.4 `CircuitBreaker.call` rejecting while open, with the "
        "`try/except CircuitBreakerError` a caller needs to turn that into a miss; "
        "timed interleaved with `open_get_us`.",
    ),
    Figure(
        "memory_hit_us",
        "µs",
        "A hit through `@tr.cached` on the `memory` backend: key built from the bound "
        "arguments (type-tagged, BLAKE2b; remembered for repeated small str/int "
        "arguments), TTL and LRU bookkeeping under a lock, a fresh value rebuilt from a "
        "`marshal` image of the decoded JSON (the caller gets its own copy).",
    ),
    Figure(
        "cachetools_hit_us",
        "µs",
        "A hit through `cachetools.cached(TTLCache(...), lock=threading.Lock())` on the "
        "same function; it returns the stored object itself (no copy, no decode).",
    ),
    Figure(
        "memory_hit_ratio_vs_cachetools",
        "x",
        "`memory_hit_us / cachetools_hit_us`, as the median of the per-round ratios.",
    ),
    Figure(
        "peer_hit_us",
        "µs",
        "The same hit through peers: dogpile.cache memory region (sync, "
        "`cache_on_arguments`), aiocache `SimpleMemoryCache` (`@cached`, awaited) and "
        "cashews `mem://` (`@cache`, awaited). Recorded, no goal.",
    ),
    Figure(
        "hung_call_ms",
        "ms",
        "Cost of one cache read while the server is frozen by SIGSTOP: "
        "`without_breaker` is the provider's own redis-py client (socket timeout "
        "0.25 s, retries off) on its own; `with_breaker_after_trip` is "
        "`CacheProvider.get` once the breaker has opened.",
    ),
    Figure(
        "threads32_ratio",
        "x",
        "32 threads released at once into one `@breaker_guarded` function that sleeps "
        "20 ms (I/O that releases the GIL): wall time until the last returns, divided "
        "by one call's time. 1.00 means the calls ran fully in parallel.",
    ),
    Figure(
        "pybreaker_threads32_ratio",
        "x",
        "The same through `pybreaker.CircuitBreaker.call`, which holds one lock across "
        "the call (reference: close to 32).",
    ),
)

EXTRA_FIGURES: tuple[Figure, ...] = (
    Figure(
        "closed_get_ratio_sync_vs_raw_bytes",
        "x",
        "`CacheProvider.get` against the raw `GET` alone (no decode): what the decode "
        "adds on top of the provider's own cost. Not the goal figure: a raw `GET` "
        "returns bytes no caller can use as the value.",
    ),
    Figure("closed_get_ratio_async_vs_raw_bytes", "x", "The same for `aget`."),
    Figure(
        "closed_get_raw_us",
        "µs",
        "The baseline of the closed ratios: one raw `GET` + decode over loopback, sync "
        "and async. The ratio's denominator: the same provider cost weighs more when "
        "the round trip is short (an idle machine) than when it is long (a busy one).",
    ),
    Figure(
        "closed_get_overhead_us",
        "µs",
        "What the provider adds to one closed `get`/`aget` (median per-round "
        "difference to raw+decode): breaker admission and outcome, key prefix, stats.",
    ),
    Figure("open_aget_us", "µs", "`await CacheProvider.aget` while open."),
    Figure(
        "guarded_reject_us",
        "µs",
        "`@breaker_guarded(fallback=None)` rejecting while open (the generic guard, "
        "not the cache provider).",
    ),
    Figure("memory_hit_async_us", "µs", "`@tr.cached` hit on an `async def` (memory backend)."),
    Figure(
        "threads32_ratio_unguarded",
        "x",
        "The 32-thread ratio of the bare function: the floor set by starting and "
        "waking 32 threads on this machine.",
    ),
)

GOALS: tuple[Goal, ...] = (
    Goal("closed_get_ratio_sync", "<=", 1.05, "the breaker must not cost speed when healthy"),
    Goal("closed_get_ratio_async", "<=", 1.05, "the same for asyncio"),
    Goal("open_get_us", "<=", 1.0, "an open circuit answers at once"),
    Goal("memory_hit_ratio_vs_cachetools", "<=", 2.0, "the in-process cache stays cheap"),
    Goal("threads32_ratio", "<=", 1.10, "no lock across the guarded call"),
)

REQUIRED_KEYS: tuple[str, ...] = tuple(figure.key for figure in FIGURES)


def evaluate_goals(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{key: {"goal": "<= 1.05", "value": ..., "pass": bool}}`` for every goal."""
    verdicts: dict[str, dict[str, Any]] = {}
    for goal in GOALS:
        value = results.get(goal.key)
        verdicts[goal.key] = {
            "goal": goal.text,
            "value": value,
            "pass": isinstance(value, (int, float)) and goal.holds(float(value)),
            "why": goal.why,
        }
    return verdicts


def _format(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_format(v)}" for k, v in value.items())
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.3f}"
        return f"{value:.2g}"
    return "-" if value is None else str(value)


def _rows(results: Mapping[str, Any], figures: tuple[Figure, ...]) -> list[tuple[str, ...]]:
    goals = results.get("goals", {})
    rows: list[tuple[str, ...]] = []
    for figure in figures:
        verdict = goals.get(figure.key)
        rows.append(
            (
                figure.key,
                _format(results.get(figure.key)),
                figure.unit,
                verdict["goal"] if verdict else "-",
                ("held" if verdict["pass"] else "MISSED") if verdict else "-",
            )
        )
    return rows


_HEADER = ("figure", "value", "unit", "goal", "result")


def render_table(results: Mapping[str, Any]) -> str:
    """A plain-text table for the terminal."""
    rows = [_HEADER, *_rows(results, FIGURES), *_rows(results, EXTRA_FIGURES)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = []
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
        if index == len(FIGURES):
            lines.append("  (extra figures, no goal)")
    return "\n".join(lines)


def _md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def render_markdown(results: Mapping[str, Any]) -> str:
    """``docs/benchmarks.md``."""
    meta = results["metadata"]
    machine = meta["machine"]
    versions = meta["versions"]
    server = meta["server"]
    goals = results["goals"]
    held = [key for key, verdict in goals.items() if verdict["pass"]]
    missed = [key for key, verdict in goals.items() if not verdict["pass"]]
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/run.py from bench/results.json; edit bench/report.py, "
        "not this file. -->",
        "",
        "The breaker exists for speed during outages; these figures show what it costs "
        "the rest of the time. Every comparison is measured side by side in one run "
        "(interleaved rounds, medians): on a noisy machine the ratios are the result, "
        "absolute times are only indicative.",
        "",
        "## Command",
        "",
        "```sh",
        "make bench            # installs the `bench` extra, then runs the line below",
        f"{meta['command']}",
        "```",
        "",
        f"It starts a private `{server['kind']}` on 127.0.0.1 (never the shared one), "
        "writes `bench/results.json`, prints the table and rewrites this page. "
        f"This run took {meta['duration_seconds']:.0f} s "
        f"({meta['started_at']}, commit `{meta['revision']}`).",
        "",
        "## Machine",
        "",
        *_md_table(
            ("", ""),
            [
                ("CPUs (nproc)", str(machine["nproc"])),
                ("CPU model", machine["cpu_model"]),
                ("memory", f"{machine['memory_gib']} GiB"),
                ("OS", machine["platform"]),
                ("Python", f"{machine['python_implementation']} {machine['python']}"),
                ("redis-py", str(versions.get("redis"))),
                ("server", f"{server['kind']} {server['version']}"),
                ("pybreaker", str(versions.get("pybreaker"))),
                ("cachetools", str(versions.get("cachetools"))),
                (
                    "peers",
                    f"dogpile.cache {versions.get('dogpile.cache')}, "
                    f"aiocache {versions.get('aiocache')}, cashews {versions.get('cashews')}",
                ),
            ],
        ),
        "",
        "## Results",
        "",
        *_md_table(_HEADER, _rows(results, FIGURES)),
        "",
        "Extra figures (context, no goal):",
        "",
        *_md_table(_HEADER, _rows(results, EXTRA_FIGURES)),
        "",
        "## Goals",
        "",
    ]
    for key, verdict in goals.items():
        mark = "held" if verdict["pass"] else "**missed**"
        out.append(
            f"- `{key}` {verdict['goal']} ({verdict['why']}): {_format(verdict['value'])}, {mark}."
        )
    out += [
        "",
        (
            f"All {len(held)} goals held in this run."
            if not missed
            else f"{len(held)} of {len(goals)} goals held; missed: "
            + ", ".join(f"`{key}`" for key in missed)
            + "."
        ),
        "",
        "## What each figure means",
        "",
    ]
    for figure in (*FIGURES, *EXTRA_FIGURES):
        out.append(f"- **`{figure.key}`** ({figure.unit}): {figure.meaning}")
    out += [
        "",
        "## Method",
        "",
        "- **Interleaved rounds.** Each comparison times every contestant in short "
        "batches of back-to-back calls, one contestant after another in an order "
        "shuffled afresh every round (seeded), for many rounds. A ratio is the median "
        "of the per-round ratios; a time is the median of the per-round means. Drift on "
        "the machine hits all contestants of a round alike and cancels out of the ratio.",
        "- **Like with like.** The closed-circuit ratios use the provider's own redis-py "
        "client (same pool, same server, same full key) and the provider's own "
        "deserialiser on the raw bytes, because `get` returns the decoded value. The "
        "ratio against the undecoded `GET` is reported as an extra figure.",
        "- **Proven hits and misses.** Every hit figure checks that the function was "
        "computed once and the provider counted hits; the open figure checks that the "
        "server received no command; the hung figure checks that the raw call timed out "
        "and the breaker stayed open while timed.",
        "- **No GC pauses inside a batch** (collected before, disabled during, as "
        "`timeit` does). Timing loops are `for _ in repeat(None, n): fn(arg)`.",
        "- **Threads.** 32 threads wait on a barrier; the clock starts before the "
        "barrier is released and stops when the last call returns, so waking the "
        "threads counts against the guard. One call's time is the median of single "
        "calls of the same function.",
        "",
        "Round counts and batch sizes of this run: see `details` and "
        "`metadata.parameters` in `bench/results.json`.",
        "",
    ]
    return "\n".join(out)
