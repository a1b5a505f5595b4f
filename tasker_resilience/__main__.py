"""``python -m tasker_resilience`` and the ``tasker-resilience`` console script."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (console scripts pass it to exit)."""
    # Imported here: `import tasker_resilience.__main__` stays as cheap as the package.
    from tasker_resilience._operations.cli import main as run

    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
