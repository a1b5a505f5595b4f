"""Real-server fixtures for this directory (see ``tests/servers.py``).

Imported rather than listed in ``pytest_plugins``: pytest refuses ``pytest_plugins`` in
a conftest below the top level, and importing keeps the fixtures and the "which server"
report scoped to the tests that talk to a real server.
"""

from tests.servers import (
    cache_server,
    cache_server_url,
    cache_url,
    key_prefix,
    private_server,
    pytest_configure,
    pytest_report_collectionfinish,
    pytest_terminal_summary,
    pytest_unconfigure,
    second_private_server,
)

__all__ = [
    "cache_server",
    "cache_server_url",
    "cache_url",
    "key_prefix",
    "private_server",
    "pytest_configure",
    "pytest_report_collectionfinish",
    "pytest_terminal_summary",
    "pytest_unconfigure",
    "second_private_server",
]
