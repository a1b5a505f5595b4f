"""Check what `make dist` built before it can ship (run by `make dist` and release.yml).

- dist/ holds exactly one sdist and one wheel, of one version;
- with ``--tag``: the tag is ``v`` + that version (release.yml);
- with ``--venv``: the wheel installed there is what imports (from its site-packages,
  not this checkout, not editable), at that version, and ``--example``'s own tests
  pass against it, run from a copy outside the repository.

Standard library only: it runs under any interpreter, before or after the build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = (
    "import json, importlib.metadata as m, tasker_resilience as t; "
    "d = m.distribution('tasker-resilience'); "
    "print(json.dumps({'file': t.__file__, 'version': t.__version__, "
    "'metadata_version': d.version, "
    "'direct_url': json.loads(d.read_text('direct_url.json') or '{}')}))"
)


def fail(message: str) -> None:
    sys.exit(f"check_dist: {message}")


def built_version(dist: Path) -> str:
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        fail(f"{dist} must hold one wheel and one sdist, not {wheels + sdists}")
    version = wheels[0].name.split("-")[1]
    if sdists[0].name != f"tasker_resilience-{version}.tar.gz":
        fail(f"the sdist {sdists[0].name} and the wheel {wheels[0].name} disagree")
    return version


def clean_env() -> dict[str, str]:
    # Nothing of this checkout may leak into the example's run.
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TASKER_", "PYTEST_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }


def check_installed(venv: Path, version: str, example: Path) -> None:
    python = venv.resolve() / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="tasker-dist-") as tmp:
        probe = subprocess.run(
            [str(python), "-c", PROBE],
            cwd=tmp,
            env=clean_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        info = json.loads(probe.stdout)
        where = Path(info["file"])
        if not where.is_relative_to(venv.resolve()) or "site-packages" not in where.parts:
            fail(f"tasker_resilience imported from {where}, not from {venv}'s site-packages")
        if info["direct_url"].get("dir_info", {}).get("editable"):
            fail("the installed package is an editable install, not the wheel")
        if info["version"] != version or info["metadata_version"] != version:
            reported = f"{info['version']} / {info['metadata_version']}"
            fail(f"built {version}, the installed package reports {reported}")
        project = Path(tmp) / example.name
        shutil.copytree(example, project, ignore=shutil.ignore_patterns("__pycache__"))
        run = subprocess.run(
            [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=project,
            env=clean_env(),
            capture_output=True,
            text=True,
        )
    print(run.stdout[-2000:], end="")
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    if run.returncode != 0 or " passed" not in summary or "skipped" in summary:
        fail(f"{example}'s tests against the wheel: {summary or run.stderr[-2000:]}")
    print(f"check_dist: tasker-resilience {version}: wheel installed in {venv}, {summary}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=Path("dist"))
    parser.add_argument("--tag", help="the release tag, which must be v<version>")
    parser.add_argument("--venv", type=Path, help="a clean venv the wheel is installed in")
    parser.add_argument("--example", type=Path, default=Path("examples/quotes"))
    args = parser.parse_args()
    version = built_version(args.dist)
    if args.tag is not None and args.tag != f"v{version}":
        fail(f"tag {args.tag!r} does not name the built version {version} (v{version})")
    if args.venv is not None:
        check_installed(args.venv, version, args.example)
    print(f"check_dist: {args.dist} holds tasker-resilience {version}")


if __name__ == "__main__":
    main()
