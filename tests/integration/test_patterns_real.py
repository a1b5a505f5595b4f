"""Glob patterns are matched in process exactly as a real server's ``SCAN MATCH``.

The memory backend and the near tier match ``delete_pattern`` in process: where they
differ from the server, a pattern delete leaves a near entry the server dropped (a
stale read) or a memory backend deletes what Redis would keep. Property-based: the
patterns are generated (hypothesis) over the characters with special meaning, and
every one is asked of the server.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tasker_resilience import glob_to_regex
from tasker_resilience._cache.backends.memory_backend import MemoryBackend
from tasker_resilience._cache.keys import escape_glob
from tasker_resilience._cache.near import NearTier
from tasker_resilience._config.schema import NearConfig

pytestmark = pytest.mark.integration

# Bytes with a meaning in a pattern, plus a 2-byte character (a "?" matches one byte)
# and neighbours of the characters a reversed range covers.
_ALPHABET = "ab-]^[\\*?é_`"
_PATTERN_ALPHABET = _ALPHABET + "*?[]"


def _suffixes() -> list[str]:
    sizes = (1, 2)
    short = [
        "".join(chars) for size in sizes for chars in itertools.product(_ALPHABET, repeat=size)
    ]
    longer = ["ab-", "a-b", "]]a", "[ab", "\\*a", "ééa", "a*?", "b^]", "_`a"]
    return ["", *short, *longer]


@pytest.fixture
def corpus(cache_url: str, key_prefix: str) -> Iterator[tuple[redis.Redis, str, list[str]]]:
    client = redis.Redis.from_url(cache_url, socket_timeout=5)
    base = key_prefix + ":"
    keys = [base + suffix for suffix in _suffixes()]
    client.mset(dict.fromkeys(keys, b"1"))
    try:
        yield client, base, keys
    finally:
        client.delete(*keys)
        client.close()


def _server_matches(client: redis.Redis, pattern: str) -> set[str]:
    return {key.decode("utf-8") for key in client.scan_iter(match=pattern, count=10_000)}


@pytest.mark.parametrize(
    "suffix_pattern",
    [
        "[b-]",  # a range b..] (the ] is its end), not {b, -}
        "[b-]]",
        "[]-a]",
        "[ab",  # never closed: still one byte from the class
        "[^",
        "[",
        "a[",
        "[\\]]",
        "[a\\",
        "\\",
        "?",  # one byte: not "é"
        "??",
        "[^a]?",
        "[a-é]*",  # a range to a byte of 0x80 or more (signed char on the server)
        "*",
        "",
    ],
)
def test_documented_edge_cases_match_the_server(
    corpus: tuple[redis.Redis, str, list[str]], suffix_pattern: str
) -> None:
    client, base, keys = corpus
    pattern = escape_glob(base) + suffix_pattern
    ours = {key for key in keys if glob_to_regex(pattern).fullmatch(key)}
    assert ours == _server_matches(client, pattern)


def test_generated_patterns_match_the_server(corpus: tuple[redis.Redis, str, list[str]]) -> None:
    client, base, keys = corpus
    prefix = escape_glob(base)

    @settings(
        max_examples=400,
        deadline=None,
        database=None,  # no .hypothesis directory in the work tree
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.text(alphabet=_PATTERN_ALPHABET, max_size=7))
    @example("[b-]")
    @example("[z-a]?")
    @example("[^?-é")  # negated, a range to a byte over 0x7f: both readings
    def check(suffix_pattern: str) -> None:
        pattern = prefix + suffix_pattern
        server = _server_matches(client, pattern)
        exact = {key for key in keys if glob_to_regex(pattern).fullmatch(key)}
        assert exact == server, suffix_pattern
        # The near tier drops (with either reading of a range's signedness) never
        # fewer keys than the server: what stays is what the server kept.
        tier = NearTier(NearConfig(enabled=True, max_entries=len(keys)))
        tier.use_ttl()
        for key in keys:
            tier.fill(key, tier.begin(key), b"1")
        tier.forget_pattern(pattern)
        kept = {key for key in keys if tier.fresh(key) is not None}
        assert not kept & server, suffix_pattern

    check()


def test_memory_backend_deletes_what_the_server_deletes(
    corpus: tuple[redis.Redis, str, list[str]],
) -> None:
    client, base, keys = corpus
    pattern = escape_glob(base) + "[b-]*"
    memory = MemoryBackend(max_capacity=len(keys) + 1)
    for key in keys:
        memory.set(key, b"1", None)
    expected = _server_matches(client, pattern)
    assert memory.delete_pattern(pattern) == len(expected) > 0
    assert all(memory.get(key) is None for key in expected)
    assert all(memory.get(key) == b"1" for key in set(keys) - expected)
