"""What host sharing costs a closed call: the same breaker and provider, sharing off and on.

``[common.circuit_breakers.host_sharing]`` must cost the closed path at most 0.1 µs.
By design it costs nothing there: the closed fast path never consults the channel (a
poller thread brings the other processes' news, and only slow paths call the channel),
so what is left to measure is the poller's share of the CPU and any cache or GIL
effect it has on the caller. Two pairs are timed in interleaved rounds: the breaker's
closed decision alone (``_acquire`` + ``_release`` of a success) and a closed
``CacheProvider.get`` over a backend that answers from memory (no I/O to hide the
difference). Each pair differs only in the breaker's host channel; the channel lives
in a private temporary directory and its poller runs as in a service.
"""

from __future__ import annotations

import tempfile
from typing import Any

from .cases_cache import KEY, VALUE, _Answering
from .registry import Figure, Goal, Stage, StageContext
from .timing import Case, Comparison, compare

__all__ = ["STAGES", "measure_host_sharing"]


def _closed_call(breaker: Any) -> None:
    generation = breaker._acquire()
    breaker._release(generation, None)


def measure_host_sharing(*, rounds: int, batch: int) -> tuple[Comparison, Comparison]:
    """``(breaker, get)``: each an interleaved comparison of ``off`` and ``on``."""
    from tasker_resilience import CacheProvider
    from tasker_resilience._breakers.breaker import Breaker
    from tasker_resilience._breakers.host_sharing import HostSharing
    from tasker_resilience._cache.serializers import get_serializer
    from tasker_resilience._config.schema import BreakerConfig, HostSharingConfig

    config = BreakerConfig(failure_threshold=5, timeout_seconds=30, success_threshold=2)
    with tempfile.TemporaryDirectory() as directory:
        sharing = HostSharing(
            HostSharingConfig(enabled=True, directory=f"{directory}/sharing"), "bench"
        )
        try:
            channel = sharing.channel("bench-host")
            if channel is None:
                raise RuntimeError("the host-sharing channel did not open")
            breakers = {
                "off": Breaker("bench-host", config),
                "on": Breaker("bench-host", config, host=channel),
            }
            raw = get_serializer("json").dumps(VALUE)  # as CacheProvider.set stores it
            providers = {
                name: CacheProvider(
                    _Answering(raw),  # type: ignore[arg-type]  # the two operations a get uses
                    breaker=breaker,
                    key_prefix="bench",
                    serializer="json",
                )
                for name, breaker in breakers.items()
            }
            for provider in providers.values():
                if provider.get(KEY) != VALUE:
                    raise RuntimeError("the answering provider disagrees")
            decision = compare(
                {name: Case(_closed_call, breaker) for name, breaker in breakers.items()},
                baseline="off",
                rounds=rounds,
                batch=batch,
            )
            get = compare(
                {name: Case(provider.get, KEY) for name, provider in providers.items()},
                baseline="off",
                rounds=rounds,
                batch=max(1, batch // 4),
            )
            if breakers["on"].metrics()["host"]["shared"] is not True:
                raise RuntimeError("host sharing switched itself off during the run")
            return decision, get
        finally:
            sharing.close()


def _run_stage(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    decision, get = measure_host_sharing(rounds=ctx.params["rounds"], batch=ctx.params["batch"])
    figures = {
        "host_sharing_closed_overhead_us": {
            "breaker": round(decision.difference("on", "off"), 4),
            "get": round(get.difference("on", "off"), 4),
        },
        "host_sharing_closed_get_us": {
            "off": round(get.per_call_us["off"], 4),
            "on": round(get.per_call_us["on"], 4),
        },
    }
    return figures, {
        "host_sharing_breaker": decision.detail(),
        "host_sharing_get": get.detail(),
    }


STAGES = (
    Stage(
        name="host_sharing",
        run=_run_stage,
        order=60,
        parameters={
            "full": {"rounds": 300, "batch": 20_000},
            "quick": {"rounds": 20, "batch": 5_000},
        },
        figures=(
            Figure(
                "host_sharing_closed_overhead_us",
                "µs",
                "What `[common.circuit_breakers.host_sharing] enabled = true` adds to a closed "
                "call (median per-round difference, sharing on minus off, interleaved): "
                "`breaker`, the breaker's closed decision alone; `get`, a closed "
                "`CacheProvider.get` over a backend that answers from memory. The closed "
                "path never reads the channel; this is the poller thread's share.",
            ),
        ),
        extra_figures=(
            Figure(
                "host_sharing_closed_get_us",
                "µs",
                "The closed in-memory `get` of that comparison, sharing off and on.",
            ),
        ),
        goals=(
            Goal(
                "host_sharing_closed_overhead_us.get",
                "<=",
                0.1,
                "host sharing must not cost the closed path more than 0.1 µs",
            ),
            Goal(
                "host_sharing_closed_overhead_us.breaker",
                "<=",
                0.1,
                "the breaker's own closed decision, the same limit",
            ),
        ),
    ),
)
