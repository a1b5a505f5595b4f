"""``@tr.cached`` memory-backend hits per argument shape, each against cachetools.

cachetools' ``cached`` with a ``TTLCache`` of the same size and a ``threading.Lock``
(what a thread-safe ``@cached`` needs, and what ours does) is the baseline of every
shape; dogpile.cache's memory region joins for the 6 KB value. Every contestant
caches the same function and a computation counter proves that only hits were timed.

Shapes: one int, one str, one tuple, one float, a keyword call, a different int key
on every call out of 100k (all cached and read once beforehand: every call is a hit,
but the key memo and the CPU caches do not help; the first read of a memory entry
decodes it, a one-time cost per entry), and a ~6 KB value (a list of 50 records, the
JSON of a page of results). For ``keys_100k`` each contestant's call includes the same
``next()`` on an iterator of the keys. The 6 KB value's goal is against dogpile
(``cached_hit_6kb_vs_dogpile``); its ratio to cachetools is reported without one.

The 6 KB value is timed in both copy policies: the default (every hit hands out a
fresh copy, rebuilt by a copy plan made for its shape; no code is ever compiled from a
value)
and ``@cached(shared=True)`` (the stored object itself, like cachetools and dogpile).
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .registry import Figure, Goal, Stage, StageContext
from .timing import Case, Comparison, compare

__all__ = ["STAGES", "measure_shapes", "page_of_records"]

DISTINCT_KEYS = 100_000
CAPACITY = 2 * DISTINCT_KEYS


def page_of_records(page: int) -> list[dict[str, Any]]:
    """~6 KB of JSON: 50 small records."""
    return [
        {
            "id": page * 100 + i,
            "name": f"user-{page}-{i}",
            "email": f"user{i}@example.com",
            "active": i % 3 != 0,
            "roles": ["reader"],
        }
        for i in range(50)
    ]


def _record(key: Any) -> dict[str, Any]:
    return {"id": 42, "name": f"user-{key}", "active": True, "roles": ["reader"]}


# The shapes: (the function's body, how it is called).
def _int_fn(user_id: int) -> Any:
    return _record(user_id)


def _str_fn(name: str) -> Any:
    return _record(name)


def _tuple_fn(point: tuple[int, str]) -> Any:
    return _record(point)


def _float_fn(score: float) -> Any:
    return _record(score)


def _kwargs_fn(user_id: int, region: str = "us", active: bool = True) -> Any:
    return _record((user_id, region, active))


def _page_fn(page: int) -> Any:
    return page_of_records(page)


def _counted(computed: Counter[str], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    # wraps: the decorators see fn's signature (inspect follows __wrapped__).
    @functools.wraps(fn)
    def compute(*args: Any, **kwargs: Any) -> Any:
        computed[name] += 1
        return fn(*args, **kwargs)

    compute.__qualname__ = f"{fn.__qualname__}_{name}"
    return compute


def _contestants(
    computed: Counter[str], shape: str, fn: Callable[..., Any], shared: bool = False
) -> dict[str, Callable[..., Any]]:
    import cachetools

    from tasker_resilience._cache.cached import cached

    made: dict[str, Callable[..., Any]] = {
        "tasker": cached(ttl=3600, namespace=f"shape-{shape}")(_counted(computed, "tasker", fn)),
        "cachetools": cachetools.cached(
            cachetools.TTLCache(maxsize=CAPACITY, ttl=3600), lock=threading.Lock()
        )(_counted(computed, "cachetools", fn)),
    }
    if shared:
        made["tasker_shared"] = cached(ttl=3600, namespace=f"shape-{shape}-shared", shared=True)(
            _counted(computed, "tasker_shared", fn)
        )
    return made


def _check(computed: Counter[str], expected: int) -> None:
    for name, count in computed.items():
        if count != expected:
            raise RuntimeError(
                f"{name} computed {count} times for {expected} argument(s): misses were timed"
            )


def _single(
    shape: str, fn: Callable[..., Any], call: Callable[[Callable[..., Any]], Callable[[Any], Any]]
) -> tuple[dict[str, Case], Counter[str]]:
    computed: Counter[str] = Counter()
    cases = {
        name: Case(call(contestant), None)
        for name, contestant in _contestants(computed, shape, fn).items()
    }
    return cases, computed


def _positional(arg: Any) -> Callable[[Callable[..., Any]], Callable[[Any], Any]]:
    def bind(contestant: Callable[..., Any]) -> Callable[[Any], Any]:
        def call(_: Any) -> Any:
            return contestant(arg)

        return call

    return bind


def _keywords(contestant: Callable[..., Any]) -> Callable[[Any], Any]:
    def call(_: Any) -> Any:
        return contestant(user_id=42, region="eu")

    return call


def _many_keys(computed: Counter[str]) -> dict[str, Case]:
    contestants = _contestants(computed, "keys_100k", _int_fn)
    cases: dict[str, Case] = {}
    for name, contestant in contestants.items():
        for _ in range(2):  # store, then read once: the first read of an entry decodes
            for key in range(DISTINCT_KEYS):  # it (once per entry); every timed call hits
                contestant(key)
        keys: Iterator[int] = itertools.cycle(range(DISTINCT_KEYS))

        def call(_: Any, contestant: Callable[..., Any] = contestant, keys: Any = keys) -> Any:
            return contestant(next(keys))

        cases[name] = Case(call, None)
    return cases


def _page_cases(computed: Counter[str]) -> dict[str, Case]:
    from dogpile.cache import make_region

    contestants = _contestants(computed, "value_6kb", _page_fn, shared=True)
    region = make_region().configure("dogpile.cache.memory", expiration_time=3600)
    contestants["dogpile"] = region.cache_on_arguments()(_counted(computed, "dogpile", _page_fn))
    return {name: Case(contestant, 7) for name, contestant in contestants.items()}


def measure_shapes(root: Path, *, rounds: int, batch: int) -> dict[str, Comparison]:
    """Configure a memory-backed process-wide Resilience, time every shape, then restore."""
    import tasker_resilience as tr
    from tasker_resilience.testing import reset

    tr.configure(
        env="test",
        overrides={
            "common": {
                "cache": {
                    "enabled": True,
                    "backend": "memory",
                    "memory": {"max_capacity": CAPACITY},
                }
            }
        },
        root=root,
    )
    results: dict[str, Comparison] = {}
    try:
        singles: dict[str, tuple[Callable[..., Any], Any]] = {
            "int": (_int_fn, _positional(42)),
            "str": (_str_fn, _positional("user-42")),
            "tuple": (_tuple_fn, _positional((42, "eu"))),
            "float": (_float_fn, _positional(42.5)),
            "kwargs": (_kwargs_fn, _keywords),
        }
        for shape, (fn, call) in singles.items():
            cases, computed = _single(shape, fn, call)
            results[shape] = compare(cases, baseline="cachetools", rounds=rounds, batch=batch)
            _check(computed, 1)
        computed = Counter[str]()
        results["keys_100k"] = compare(
            _many_keys(computed), baseline="cachetools", rounds=rounds, batch=batch
        )
        _check(computed, DISTINCT_KEYS)
        computed = Counter[str]()
        results["value_6kb"] = compare(
            _page_cases(computed), baseline="cachetools", rounds=rounds, batch=max(1, batch // 10)
        )
        _check(computed, 1)
    finally:
        reset()
    return results


def measure_large_copy(*, rounds: int, batch: int) -> dict[str, float]:
    """What copying the 6 KB page costs a default-policy memory hit (µs per copy: the
    copy plan built for its shape), beside the other ways to get a fresh copy:
    ``marshal.loads`` of an image (what values without a short plan use) and
    ``json.loads`` of the stored bytes (what a hit would cost with neither)."""
    import json
    import marshal

    from tasker_resilience._cache.reads import copier_of

    value = page_of_records(7)
    plan = copier_of(value)
    if plan is None or plan(value) != value or plan(value)[0] is value[0]:
        raise RuntimeError("the 6 KB page must get a copy plan of fresh records")
    image = marshal.dumps(value)
    stored = json.dumps(value).encode()
    loads = marshal.loads  # nosec B302 # an image made just above, in this process
    copies = compare(
        {
            "json": Case(json.loads, stored),
            "marshal": Case(loads, image),
            "plan": Case(plan, value),
        },
        baseline="json",
        rounds=rounds,
        batch=batch,
    )
    return {
        "plan_us": round(copies.per_call_us["plan"], 3),
        "marshal_us": round(copies.per_call_us["marshal"], 3),
        "json_us": round(copies.per_call_us["json"], 3),
    }


def _run_stage(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    shapes = measure_shapes(ctx.root, rounds=ctx.params["rounds"], batch=ctx.params["batch"])
    large_copy = measure_large_copy(
        rounds=ctx.params["rounds"], batch=max(1, ctx.params["batch"] // 10)
    )
    ratios = {shape: round(result.ratios["tasker"], 3) for shape, result in shapes.items()}
    page = shapes["value_6kb"]
    figures = {
        "cached_hit_shapes": ratios,
        "cached_hit_6kb_vs_dogpile": {
            "copy": round(page.ratio("tasker", "dogpile"), 3),
            "shared": round(page.ratio("tasker_shared", "dogpile"), 3),
        },
        "cached_hit_shapes_us": {
            shape: {name: round(us, 3) for name, us in result.per_call_us.items()}
            for shape, result in shapes.items()
        },
        "large_copy_6kb": large_copy,
    }
    return figures, {"shapes": {shape: result.detail() for shape, result in shapes.items()}}


_SHAPE_GOALS = tuple(
    Goal(
        f"cached_hit_shapes.{shape}",
        "<=",
        2.0,
        f"a `@cached` hit ({shape.replace('_', ' ')}) within 2x cachetools",
    )
    for shape in ("int", "str", "tuple", "float", "kwargs", "keys_100k")
)

STAGES = (
    Stage(
        name="shapes",
        run=_run_stage,
        order=25,
        parameters={"full": {"rounds": 30, "batch": 2_000}, "quick": {"rounds": 4, "batch": 500}},
        figures=(
            Figure(
                "cached_hit_shapes",
                "x",
                "A `@tr.cached` hit on the memory backend divided by a hit through "
                "`cachetools.cached(TTLCache(...), lock=threading.Lock())` on the same "
                "function, per argument shape: one int, one str, one tuple, one float, a "
                "keyword call, 100k distinct int keys (each call a different one, all "
                "cached), and a ~6 KB value (50 records). Default copy policy: every hit "
                "gets its own copy; cachetools hands out the stored object.",
            ),
            Figure(
                "cached_hit_6kb_vs_dogpile",
                "x",
                "The 6 KB hit divided by dogpile.cache's memory region "
                "(`cache_on_arguments`, which hands out the stored object): `copy` is the "
                "default policy (a fresh copy per hit), `shared` is `@cached(shared=True)`.",
            ),
        ),
        extra_figures=(
            Figure(
                "cached_hit_shapes_us",
                "µs",
                "The per-call times behind `cached_hit_shapes` (medians over rounds).",
            ),
            Figure(
                "large_copy_6kb",
                "µs",
                "How a default-policy hit copies the 6 KB page: `plan_us` the copy plan "
                "built for its shape (a list of same-shaped records), timed beside "
                "`marshal_us` (`marshal.loads` of an image: values without a short plan) "
                "and `json_us` (`json.loads` of the stored bytes: a copy with neither).",
            ),
        ),
        goals=(
            *_SHAPE_GOALS,
            Goal(
                "cached_hit_6kb_vs_dogpile.copy",
                "<=",
                1.5,
                "a large hit, copied, within 1.5x dogpile's uncopied one",
            ),
        ),
    ),
)
