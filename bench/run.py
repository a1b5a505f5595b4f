"""Run the benchmark suite: ``python bench/run.py`` (``make bench``).

Writes ``bench/results.json``, prints a table, and rewrites ``docs/benchmarks.md``.
``--quick`` runs a fraction of the rounds (a smoke test; its figures are noisier).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a script, bench/ is on sys.path but the repo root is not.
    sys.path.insert(0, str(ROOT))

from bench import environment  # noqa: E402  # needs the sys.path line above
from bench.report import (  # noqa: E402
    REQUIRED_KEYS,
    evaluate_goals,
    render_markdown,
    render_table,
)
from tasker_resilience._operations.drill.local_server import LocalServer  # noqa: E402

T = TypeVar("T")

STAGES = ("cache", "memory", "threads")

# Rounds x batch per comparison, sized for ~2-3 minutes on 2 cores: enough rounds
# that the median ratio moves by well under the 5% goal margin from run to run.
PARAMETERS: dict[str, dict[str, int]] = {
    "full": {
        "closed_rounds": 1500,
        "closed_batch": 20,
        "open_rounds": 40,
        "open_batch": 20_000,
        "memory_rounds": 60,
        "memory_batch": 4_000,
        "thread_rounds": 41,
        "pybreaker_thread_rounds": 5,
    },
    "quick": {
        "closed_rounds": 40,
        "closed_batch": 20,
        "open_rounds": 6,
        "open_batch": 5_000,
        "memory_rounds": 8,
        "memory_batch": 1_000,
        "thread_rounds": 5,
        "pybreaker_thread_rounds": 2,
    },
}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _timed(label: str, fn: Callable[[], T]) -> T:
    _log(f"[bench] {label} ...")
    start = time.perf_counter()
    result = fn()
    _log(f"[bench] {label} done in {time.perf_counter() - start:.1f} s")
    return result


@contextmanager
def _server(binary: str) -> Iterator[LocalServer]:
    """A private server on a free loopback port (never the shared one), always stopped."""
    with LocalServer(binary) as server:
        yield server


def _r(value: float, digits: int = 4) -> float:
    return round(value, digits)


def _cache_figures(
    params: dict[str, int], server_binary: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    from bench.cases_cache import measure_cache

    with _server(server_binary) as server:
        server_info = {"kind": server.kind, "version": server.version()}
        cache = measure_cache(
            server.url,
            server,
            ROOT,
            rounds=params["closed_rounds"],
            batch=params["closed_batch"],
            open_rounds=params["open_rounds"],
            open_batch=params["open_batch"],
        )
    assert cache.closed_sync is not None
    assert cache.closed_async is not None
    assert cache.open_sync is not None
    assert cache.open_async is not None
    hung = dict(cache.hung)
    hung_detail = hung.pop("detail")
    figures = {
        "closed_get_ratio_sync": _r(cache.closed_sync.ratios["provider"]),
        "closed_get_ratio_async": _r(cache.closed_async.ratios["provider"]),
        "open_get_us": _r(cache.open_sync.per_call_us["provider.get"]),
        "pybreaker_reject_us": _r(cache.open_sync.per_call_us["pybreaker"]),
        "hung_call_ms": hung,
        "closed_get_ratio_sync_vs_raw_bytes": _r(
            cache.closed_sync.per_call_us["provider"] / cache.closed_sync.per_call_us["raw bytes"]
        ),
        "closed_get_ratio_async_vs_raw_bytes": _r(
            cache.closed_async.per_call_us["provider"] / cache.closed_async.per_call_us["raw bytes"]
        ),
        "closed_get_raw_us": {
            "sync": _r(cache.closed_sync.per_call_us["raw+decode"], 2),
            "async": _r(cache.closed_async.per_call_us["raw+decode"], 2),
        },
        "closed_get_overhead_us": {
            "sync": _r(cache.closed_sync.difference("provider", "raw+decode"), 3),
            "async": _r(cache.closed_async.difference("provider", "raw+decode"), 3),
        },
        "open_aget_us": _r(cache.open_async.per_call_us["provider.aget"]),
        "guarded_reject_us": _r(cache.open_sync.per_call_us["breaker_guarded"]),
    }
    details = {
        "server": server_info,
        "closed_sync": cache.closed_sync.detail(),
        "closed_async": cache.closed_async.detail(),
        "open_sync": cache.open_sync.detail(),
        "open_async": cache.open_async.detail(),
        "hung": hung_detail,
    }
    return figures, details


def _memory_figures(params: dict[str, int], _: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from bench.cases_memory import measure_memory

    memory = measure_memory(ROOT, rounds=params["memory_rounds"], batch=params["memory_batch"])
    sync, asyncs = memory.sync, memory.asyncs
    figures = {
        "memory_hit_us": _r(sync.per_call_us["tasker"]),
        "cachetools_hit_us": _r(sync.per_call_us["cachetools"]),
        "memory_hit_ratio_vs_cachetools": _r(sync.ratios["tasker"]),
        "peer_hit_us": {
            "dogpile": _r(sync.per_call_us["dogpile"]),
            "aiocache": _r(asyncs.per_call_us["aiocache"]),
            "cashews": _r(asyncs.per_call_us["cashews"]),
        },
        "memory_hit_async_us": _r(asyncs.per_call_us["tasker_async"]),
    }
    return figures, {"memory_sync": sync.detail(), "memory_async": asyncs.detail()}


def _thread_figures(params: dict[str, int], _: str) -> tuple[dict[str, Any], dict[str, Any]]:
    import tasker_resilience as tr
    from bench.cases_breaker import measure_threads

    # Breakers only: a Resilience from default settings, no cache is ever built.
    res = tr.Resilience(tr.Settings())
    threads = measure_threads(
        res, rounds=params["thread_rounds"], reference_rounds=params["pybreaker_thread_rounds"]
    )
    ratios = threads.ratios
    figures = {
        "threads32_ratio": _r(ratios["tasker"]),
        "pybreaker_threads32_ratio": _r(ratios["pybreaker"]),
        "threads32_ratio_unguarded": _r(ratios["unguarded"]),
    }
    return figures, {"threads": threads.detail()}


def _command(argv: list[str]) -> str:
    """How this run was started, with the interpreter relative to the repo if it is there."""
    exe = Path(sys.executable)
    python = exe.relative_to(ROOT).as_posix() if exe.is_relative_to(ROOT) else "python"
    return " ".join([python, "bench/run.py", *argv])


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    parser.add_argument(
        "--only", choices=STAGES, action="append", help="run only this stage (repeatable)"
    )
    parser.add_argument(
        "--server",
        default="redis-server",
        help="server binary (name on PATH or path) started privately (default: redis-server)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite the docs page")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: print the table and rewrite the docs from --output",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.render_only:
        stored = json.loads(args.output.read_text(encoding="utf-8"))
        print(render_table(stored))
        if not args.no_docs:
            args.docs.write_text(render_markdown(stored), encoding="utf-8")
        return 0

    profile = "quick" if args.quick else "full"
    params = PARAMETERS[profile]
    stages = args.only or list(STAGES)
    started = datetime.datetime.now(datetime.timezone.utc)
    start = time.perf_counter()
    results: dict[str, Any] = {}
    details: dict[str, Any] = {}
    server_info: dict[str, Any] = {"kind": None, "version": None}
    runners: dict[str, Callable[[dict[str, int], str], tuple[dict[str, Any], dict[str, Any]]]] = {
        "cache": _cache_figures,
        "memory": _memory_figures,
        "threads": _thread_figures,
    }
    for stage in stages:
        figures, stage_details = _timed(
            stage, functools.partial(runners[stage], params, args.server)
        )
        results.update(figures)
        details.update(stage_details)
    server_info = details.pop("server", server_info)
    duration = time.perf_counter() - start

    results["goals"] = evaluate_goals(results)
    results["metadata"] = {
        "command": _command(argv if argv is not None else sys.argv[1:]),
        "started_at": started.isoformat(timespec="seconds"),
        "duration_seconds": round(duration, 1),
        "profile": profile,
        "stages": stages,
        "parameters": params,
        "revision": environment.source_revision(ROOT),
        "machine": environment.machine(),
        "versions": environment.package_versions(),
        "server": server_info,
    }
    results["details"] = details

    missing = [key for key in REQUIRED_KEYS if key not in results]
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(render_table(results))
    print(f"\nwrote {args.output} in {duration:.0f} s")
    if missing:
        _log(f"[bench] partial run (--only), missing: {', '.join(missing)}; docs not rewritten")
    elif not args.no_docs:
        args.docs.write_text(render_markdown(results), encoding="utf-8")
        print(f"wrote {args.docs}")
    for key, verdict in results["goals"].items():
        if verdict["value"] is not None and not verdict["pass"]:
            _log(f"[bench] goal missed: {key} = {verdict['value']} (goal {verdict['goal']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
