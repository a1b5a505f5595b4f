"""Run the benchmark suite: ``python bench/run.py`` (``make bench``).

Writes ``bench/results.json``, prints a table, and rewrites ``docs/benchmarks.md``.
``--quick`` runs a fraction of the rounds (a smoke test; its figures are noisier).

The stages are found, not listed: every ``bench/cases_*.py`` that defines ``STAGES``
(see ``bench/registry.py``) is run in the stages' ``order``, and its figures and
goals appear in the table, ``results.json`` and the docs page.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import pkgutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a script, bench/ is on sys.path but the repo root is not.
    sys.path.insert(0, str(ROOT))

from bench import environment  # noqa: E402  # needs the sys.path line above
from bench.registry import Stage, StageContext  # noqa: E402
from bench.report import (  # noqa: E402
    evaluate_goals,
    render_markdown,
    render_table,
    replace_readme_summary,
    required_keys,
)

T = TypeVar("T")


def discover_stages() -> list[Stage]:
    """Every ``STAGES`` entry of the ``bench/cases_*.py`` modules, in ``order``."""
    stages: list[Stage] = []
    for module_info in pkgutil.iter_modules([str(Path(__file__).resolve().parent)]):
        if not module_info.name.startswith("cases_"):
            continue
        module = importlib.import_module(f"bench.{module_info.name}")
        found = getattr(module, "STAGES", ())
        for stage in found:
            if not isinstance(stage, Stage):
                raise TypeError(f"bench.{module_info.name}.STAGES holds {stage!r}, not a Stage")
            stages.append(stage)
    names = [stage.name for stage in stages]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"two bench stages share a name: {', '.join(duplicated)}")
    return sorted(stages, key=lambda stage: (stage.order, stage.name))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _timed(label: str, fn: Callable[[], T]) -> T:
    _log(f"[bench] {label} ...")
    start = time.perf_counter()
    result = fn()
    _log(f"[bench] {label} done in {time.perf_counter() - start:.1f} s")
    return result


def _command(argv: list[str]) -> str:
    """How this run was started, with the interpreter relative to the repo if it is there."""
    exe = Path(sys.executable)
    python = exe.relative_to(ROOT).as_posix() if exe.is_relative_to(ROOT) else "python"
    return " ".join([python, "bench/run.py", *argv])


def _parse(argv: list[str] | None, stage_names: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    parser.add_argument(
        "--only", choices=stage_names, action="append", help="run only this stage (repeatable)"
    )
    parser.add_argument(
        "--server",
        default="redis-server",
        help="server binary (name on PATH or path) started privately (default: redis-server)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument(
        "--no-docs", action="store_true", help="do not rewrite the docs page and README block"
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: print the table and rewrite the docs from --output",
    )
    return parser.parse_args(argv)


def _write_docs(args: argparse.Namespace, results: dict[str, Any], stages: list[Stage]) -> None:
    """docs/benchmarks.md and the README's generated paragraph, from the same results."""
    args.docs.write_text(render_markdown(results, stages), encoding="utf-8")
    if args.readme.exists():
        text = args.readme.read_text(encoding="utf-8")
        args.readme.write_text(replace_readme_summary(text, results), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    all_stages = discover_stages()
    args = _parse(argv, [stage.name for stage in all_stages])
    if args.render_only:
        stored = json.loads(args.output.read_text(encoding="utf-8"))
        stored["goals"] = evaluate_goals(stored, all_stages)
        print(render_table(stored, all_stages))
        if not args.no_docs:
            _write_docs(args, stored, all_stages)
        return 0

    # Every stage measures the library itself. OpenTelemetry's per-call cost (its API is
    # installed here, for the telemetry stage) is that stage's own figure: the other
    # stages run with its slot empty, as in a process without the API.
    from tasker_resilience._operations import telemetry

    telemetry.uninstall()
    profile = "quick" if args.quick else "full"
    stages = [stage for stage in all_stages if not args.only or stage.name in args.only]
    started = datetime.datetime.now(datetime.timezone.utc)
    start = time.perf_counter()
    results: dict[str, Any] = {}
    details: dict[str, Any] = {}
    parameters: dict[str, dict[str, int]] = {}
    for stage in stages:
        ctx = StageContext(
            params=stage.params(profile), profile=profile, server_binary=args.server, root=ROOT
        )
        parameters[stage.name] = ctx.params
        figures, stage_details = _timed(stage.name, lambda ctx=ctx, stage=stage: stage.run(ctx))
        overlap = sorted(set(figures) & set(results))
        if overlap:
            raise RuntimeError(f"stage {stage.name!r} rewrites keys of another: {overlap}")
        results.update(figures)
        details.update(stage_details)
    server_info = details.pop("server", {"kind": None, "version": None})
    duration = time.perf_counter() - start

    results["goals"] = evaluate_goals(results, stages)
    results["metadata"] = {
        "command": _command(argv if argv is not None else sys.argv[1:]),
        "started_at": started.isoformat(timespec="seconds"),
        "duration_seconds": round(duration, 1),
        "profile": profile,
        "stages": [stage.name for stage in stages],
        "parameters": parameters,
        "revision": environment.source_revision(ROOT),
        "machine": environment.machine(),
        "versions": environment.package_versions(),
        "server": server_info,
    }
    results["details"] = details

    missing = [key for key in required_keys(all_stages) if key not in results]
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(render_table(results, all_stages))
    print(f"\nwrote {args.output} in {duration:.0f} s")
    if missing:
        _log(f"[bench] partial run (--only), missing: {', '.join(missing)}; docs not rewritten")
    elif not args.no_docs:
        _write_docs(args, results, all_stages)
        print(f"wrote {args.docs} and the speed paragraph of {args.readme}")
    for key, verdict in results["goals"].items():
        if verdict["value"] is not None and not verdict["pass"]:
            _log(f"[bench] goal missed: {key} = {verdict['value']} (goal {verdict['goal']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
