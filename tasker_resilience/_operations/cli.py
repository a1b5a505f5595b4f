"""The ``tasker-resilience`` command: ``drill``, ``health``, ``config`` and ``explain``.

Exit codes: 0 success (``health``: healthy or degraded), 1 ``health`` unhealthy or a
drill that did not show the breaker open and close, 2 bad arguments, 3 configuration
error, 4 a server or port that cannot be reached or bound, 130 interrupted drill.
Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from tasker_resilience._config.redact import REDACTED, is_secret_name, redact_url, redact_value
from tasker_resilience._errors import ConfigurationError

if TYPE_CHECKING:
    from tasker_resilience._config.layers import LoadedSettings
    from tasker_resilience._config.schema import Settings

__all__ = ["EXIT_CONFIG", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_UNHEALTHY", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 130

PROG = "tasker-resilience"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block; one line says enough and points on.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        # The command is optional to argparse, so an unknown flag (`--bogus`) is named
        # first; a missing command is reported here, after that.
        parsed = super().parse_args(args, namespace)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and (
                getattr(parsed, action.dest) is None
            ):
                self.error(f"a COMMAND is required: one of {', '.join(action.choices)}")
        return parsed


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _at_least(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= 64:
            raise argparse.ArgumentTypeError(f"{text!r} must be from {low} to 64")
        return value

    parse.__name__ = "int"
    return parse


def _build_parser() -> argparse.ArgumentParser:
    from tasker_resilience._operations import http as _http
    from tasker_resilience._operations.drill import fault_drill as _fault_drill
    from tasker_resilience._operations.drill import runner as _drill

    parser = _Parser(
        prog=PROG,
        description="Circuit breakers for a service's cache and dependencies: "
        "an outage drill, the health report, the effective settings.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log breaker transitions")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    defaults = _drill.DrillOptions()
    drill = commands.add_parser(
        "drill",
        help="an outage drill: freeze a private cache server and watch the breaker",
        description="Freeze a private server under a steady load, watch the cache breaker "
        "open and close, and compare with the same outage without the breaker. With --url, "
        "only observe your own server (it is never frozen).",
    )
    drill.add_argument("--url", help="observe this Redis/Dragonfly server instead (no outage)")
    drill.add_argument("--json", action="store_true", help="print machine-readable results")
    drill.add_argument("--quiet", action="store_true", help="no progress display")
    drill.add_argument(
        "--in-process",
        action="store_true",
        help="use the in-process fault injector even if a server binary is on PATH",
    )
    drill.add_argument("--server-binary", metavar="PATH", help="the server binary to start")
    drill.add_argument(
        "--near",
        action="store_true",
        help="show what the near cache buys: origin load per phase (healthy, server "
        "frozen) of a @cached function, with and without [common.cache.near]",
    )
    drill.add_argument(
        "--workers",
        type=_at_least(2),
        metavar="N",
        help="what one outage costs a host of N worker processes, with and without "
        "[common.circuit_breakers.host_sharing]: each reads 20 times a second (socket "
        "timeout 0.25 s, failure_threshold 5, timeout_seconds 8); --outage sets how long "
        "the server stays frozen",
    )
    drill.add_argument(
        "--topology",
        choices=("cluster", "sentinel"),
        help="stage the outage on a local topology instead: a 3-master Redis Cluster "
        "(a master frozen, then one killed) or a Sentinel group (the primary killed)",
    )
    drill.add_argument(
        "--fault",
        choices=tuple(_fault_drill.FAULTS),
        help="stage this fault through a fault proxy in front of a private server instead "
        "(brownout: 60%% of replies held 120 ms; blackhole: never answers; reset: TCP RST; "
        "slow-link: a few hundred bytes/s) and print what each phase cost; its defaults "
        "are the brownout set-up: 100 ops/s, socket timeout 0.25s, rate rules on",
    )
    number, whole = _positive(float), _positive(int)
    for flag, kind, default, text in (
        ("--rate", number, defaults.rate, "operations per second offered"),
        ("--warmup", number, defaults.warmup, "seconds of load before the outage"),
        ("--outage", number, defaults.outage, "seconds frozen after the breaker opens"),
        ("--cooldown", number, defaults.cooldown, "seconds of load after it closes"),
        ("--duration", number, defaults.duration, "seconds to observe (--url only)"),
        ("--socket-timeout", number, defaults.socket_timeout, "cache socket timeout, seconds"),
        ("--failure-threshold", whole, defaults.failure_threshold, "failures that open"),
        ("--open-timeout", number, defaults.open_timeout, "seconds open before a probe"),
        ("--success-threshold", whole, defaults.success_threshold, "probes that close"),
    ):
        # No argparse default: each kind of drill fills in its own (see _drill_options).
        drill.add_argument(flag, type=kind, help=f"{text} (default {default:g})")

    health = commands.add_parser(
        "health",
        help="print the health report, or serve it over HTTP",
        description="Print the health report as JSON (exit 0 healthy or degraded, 1 "
        "unhealthy), or with --serve answer GET /health and /metrics until interrupted.",
    )
    _add_settings_arguments(health)
    health.add_argument("--serve", action="store_true", help="serve /health and /metrics")
    health.add_argument("--host", default=_http.DEFAULT_HOST, help="address to listen on")
    health.add_argument(
        "--port",
        type=int,
        default=_http.DEFAULT_PORT,
        help=f"port to listen on; 0 picks a free one (default {_http.DEFAULT_PORT})",
    )

    config = commands.add_parser(
        "config",
        help="print the effective settings and where each value came from",
        description="Print the merged settings (secrets redacted) and the layer each value "
        "came from: a settings file, the environment, or the built-in default.",
    )
    _add_settings_arguments(config)
    config.add_argument("--json", action="store_true", help="print machine-readable output")

    from tasker_resilience._operations.explain import add_parser as add_explain

    add_explain(commands, _add_settings_arguments, _positive)
    return parser


def _add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env",
        help="test, development, production or any folder under config/tasker/environments "
        "(default $TASKER_ENV, else development)",
    )
    parser.add_argument(
        "--root",
        help="an existing folder holding config/tasker and settings.toml "
        "(default $TASKER_CONFIG_ROOT or .)",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so the cache backends it registers are known "
        "(repeatable; the current directory is importable; see also common.cache.plugins)",
    )


def _import_requested(args: argparse.Namespace) -> None:
    """Import ``--import`` modules; a failure is a configuration error naming the module."""
    from tasker_resilience._cache.backends.contract import import_plugins

    # A console script's sys.path starts at its bin/ directory, not where the user
    # stands; the user's own package (myapp/cache.py) is expected to import from here,
    # as with ``python -m``. Settings plugins (common.cache.plugins) benefit too.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    import_plugins(args.imports, setting="--import")


# --- drill -----------------------------------------------------------------------------


def _drill(args: argparse.Namespace) -> int:
    from tasker_resilience._operations.drill.runner import (
        DrillOptions,
        Progress,
        format_report,
        run_drill,
    )

    if args.topology is not None and (
        args.url or args.in_process or args.server_binary or args.near
    ):
        print(
            f"{PROG} drill: --topology starts its own local servers; it does not combine "
            "with --url, --in-process, --server-binary or --near",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.fault is not None and (
        args.url or args.in_process or args.near or args.topology or args.workers is not None
    ):
        print(
            f"{PROG} drill: --fault starts its own server behind a fault proxy; it does not "
            "combine with --url, --in-process, --near, --topology or --workers",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.workers is not None:
        return _workers_drill(args)
    if args.near:
        return _near_drill(args)
    given = _drill_options(args)
    if args.fault is not None:
        from tasker_resilience._operations.drill.fault_drill import fault_drill_options

        options = fault_drill_options(**given)
    else:
        options = DrillOptions(**given)
    if not args.verbose:
        # The cache's own failure WARNINGs are the outage the drill stages on purpose;
        # the progress display reports it. --verbose shows the real log lines too.
        logging.getLogger("tasker_resilience").setLevel(logging.ERROR)
    progress = Progress(sys.stderr, enabled=not args.quiet)
    if args.topology is not None:
        from tasker_resilience._operations.drill.topology_drill import run_topology_drill

        report = run_topology_drill(options, args.topology, progress)
    elif args.fault is not None:
        from tasker_resilience._operations.drill.fault_drill import run_fault_drill

        report = run_fault_drill(options, args.fault, progress)
    else:
        report = run_drill(options, progress)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_report(report))
    return EXIT_OK if report.ok else EXIT_UNHEALTHY


def _comparison_drill(flag: str, args: argparse.Namespace) -> Callable[[str], None]:
    """Logging for a drill that compares two runs (``--near``, ``--workers``), and the
    function that prints its progress lines (none with ``--quiet``)."""
    logging.getLogger("tasker_resilience").setLevel(logging.INFO if args.verbose else logging.ERROR)

    def say(message: str) -> None:
        if not args.quiet:
            print(f"[drill {flag}] {message}", file=sys.stderr, flush=True)

    return say


_DRILL_NUMBERS = (
    "rate",
    "warmup",
    "outage",
    "cooldown",
    "duration",
    "socket_timeout",
    "failure_threshold",
    "open_timeout",
    "success_threshold",
)


def _drill_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``DrillOptions`` fields the command line set; the rest keep the defaults of
    the kind of drill chosen."""
    given: dict[str, Any] = {
        "url": args.url,
        "in_process": args.in_process,
        "server_binary": args.server_binary,
    }
    for name in _DRILL_NUMBERS:
        if getattr(args, name) is not None:
            given[name] = getattr(args, name)
    if args.socket_timeout is not None:
        given["connect_timeout"] = args.socket_timeout
    return given


def _near_drill(args: argparse.Namespace) -> int:
    from tasker_resilience._operations.drill.near_load import format_origin_loads, run_near_drill
    from tasker_resilience._operations.drill.options import DrillOptions

    if args.url or args.in_process:
        print(
            f"{PROG} drill: --near freezes a private server; it cannot be combined with "
            f"{'--url' if args.url else '--in-process'}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    say = _comparison_drill("--near", args)
    options = DrillOptions(**_drill_options(args))
    loads = run_near_drill(
        server_binary=args.server_binary,
        rate=options.rate,
        healthy_seconds=options.warmup * 2,
        outage_seconds=options.outage,
        say=say,
    )
    if args.json:
        print(json.dumps({"near": [load.as_dict() for load in loads]}, indent=2))
    else:
        print(format_origin_loads(loads))
    with_near, without = loads
    # The tier must at least lower the outage's origin load to call the drill a success.
    return EXIT_OK if with_near.ratio < without.ratio else EXIT_UNHEALTHY


def _workers_drill(args: argparse.Namespace) -> int:
    from tasker_resilience._operations.drill.fleet import (
        FleetSetup,
        format_fleet_runs,
        run_fleet_drill,
    )

    if args.url or args.in_process or args.near or args.topology:
        print(
            f"{PROG} drill: --workers freezes a private server; it does not combine with "
            "--url, --in-process, --near or --topology",
            file=sys.stderr,
        )
        return EXIT_USAGE
    say = _comparison_drill("--workers", args)
    runs = run_fleet_drill(
        # --outage unset: the fleet's own default (the drill's numbers have none, see
        # _drill_options).
        FleetSetup(
            workers=args.workers, **({} if args.outage is None else {"outage": args.outage})
        ),
        server_binary=args.server_binary,
        say=say,
    )
    if args.json:
        print(json.dumps({"workers": [run.as_dict() for run in runs]}, indent=2))
    else:
        print(format_fleet_runs(runs))
    without, with_sharing = runs
    # Sharing must at least lower the onset's hung calls and bring the cache back.
    shared_better = with_sharing.slow_calls < without.slow_calls
    return EXIT_OK if shared_better and with_sharing.recovery is not None else EXIT_UNHEALTHY


# --- health ----------------------------------------------------------------------------


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (a supervisor stopping us) ends the server the way Ctrl-C does.
    raise KeyboardInterrupt


def _health(args: argparse.Namespace) -> int:
    from tasker_resilience._resilience import configure_loaded, load_validated

    _import_requested(args)
    loaded, settings = load_validated(args.env, root=args.root)
    # Said before the caches are built: their start-up check pings that server (and may
    # warn). The settings read here are the ones built from (not read a second time).
    _say_what_is_checked(loaded, settings)
    res = configure_loaded(loaded, settings)
    if not args.serve:
        report = res.health()
        print(json.dumps(report, indent=2))
        return EXIT_UNHEALTHY if report["status"] == "unhealthy" else EXIT_OK

    from tasker_resilience._operations.http import serve

    def ready(base_url: str) -> None:
        print(
            f"serving {base_url}/health and {base_url}/metrics (also /livez and /readyz; "
            "Ctrl-C to stop)",
            flush=True,
        )

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        serve(args.host, args.port, res, on_ready=ready)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    except OSError as exc:
        print(
            f"{PROG} health: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    finally:
        res.close()
    return EXIT_OK


_URL_KEY = "common.cache.redis.url"


def _say_what_is_checked(loaded: LoadedSettings, settings: Settings) -> None:
    """One stderr line naming the server the report pings (password masked) and the
    layer its URL came from: with no settings at all it is a default nobody typed."""
    cache = settings.cache
    if not cache.enabled or cache.backend not in ("redis", "dragonfly"):
        return  # in-process or a user's backend: no URL of ours to name
    source = _source(_URL_KEY, loaded.sources, loaded.root)
    if source == "default":
        variable = "TASKER_" + _URL_KEY.upper().replace(".", "__")
        source = f"the built-in default; set {_URL_KEY} or {variable} to check another"
    print(
        f"{PROG} health: checking the {cache.backend} cache at {redact_url(cache.redis.url)} "
        f"({_URL_KEY} from {source})",
        file=sys.stderr,
        flush=True,
    )


# --- config ----------------------------------------------------------------------------


def _effective(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """Flatten typed settings (dataclasses and mappings) into dotted keys."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            _effective(getattr(value, item.name), f"{prefix}.{item.name}", out)
    elif isinstance(value, Mapping):
        for key in sorted(value):
            _effective(value[key], f"{prefix}.{key}", out)
    else:
        out[prefix] = value


def _redacted(key: str, value: Any) -> Any:
    if is_secret_name(key.rsplit(".", 1)[-1]):
        return REDACTED
    # Every URL-shaped value, wherever it sits (a backend's list of node URLs too).
    return redact_value(value)


def _source(key: str, sources: Mapping[str, str], root: Path) -> str:
    layer = sources.get(key)
    if layer is None:
        return "default"
    if layer == "environment":
        return f"environment ({'TASKER_' + key.upper().replace('.', '__')})"
    try:
        return str(Path(layer).resolve().relative_to(root))
    except ValueError:
        return layer


def _config(args: argparse.Namespace) -> int:
    from tasker_resilience._resilience import load_validated

    _import_requested(args)
    loaded, settings = load_validated(args.env, root=args.root)
    flat: dict[str, Any] = {}
    _effective(settings.circuit_breakers, "common.circuit_breakers", flat)
    _effective(settings.telemetry, "common.telemetry", flat)
    for name, cache in settings.caches.items():
        prefix = "common.cache" if name == "default" else f"common.caches.{name}"
        section: dict[str, Any] = {}
        _effective(cache, prefix, section)
        if name != "default":
            del section[f"{prefix}.plugins"]  # read from [common.cache] only
        # backend_options repeats the backend's own table under a generic name; show it
        # under its real key (common.cache.<backend>) where a user would look for it.
        options = f"{prefix}.backend_options."
        for key in [key for key in section if key.startswith(options)]:
            value = section.pop(key)
            if cache.backend not in ("redis", "dragonfly", "memory"):
                section[f"{prefix}.{cache.backend}.{key[len(options) :]}"] = value
        flat.update(section)
    rows = {
        key: {"value": _redacted(key, value), "source": _source(key, loaded.sources, loaded.root)}
        for key, value in sorted(flat.items())
    }
    if args.json:
        payload = {
            "env": loaded.env,
            "root": str(loaded.root),
            "files": [str(path) for path in loaded.files],
            "settings": rows,
        }
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    print(f"# effective settings for env {loaded.env!r}, root {loaded.root} (secrets redacted)")
    print(f"# files, later wins: {', '.join(_source_files(loaded.files, loaded.root)) or 'none'}")
    width = max(len(f"{key} = {json.dumps(row['value'])}") for key, row in rows.items())
    for key, row in rows.items():
        assignment = f"{key} = {json.dumps(row['value'])}"
        print(f"{assignment:<{width}}  # {row['source']}")
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    from tasker_resilience._operations.explain import run

    _import_requested(args)
    run(args)
    return EXIT_OK


def _source_files(files: Sequence[Path], root: Path) -> list[str]:
    shown = []
    for path in files:
        try:
            shown.append(str(path.relative_to(root)))
        except ValueError:
            shown.append(str(path))
    return shown


def _check_drill_url(parser: argparse.ArgumentParser, url: str) -> None:
    """``drill --url`` takes a cache URL; anything else is a usage error (exit 2)."""
    from tasker_resilience._config.schema import REDIS_URL_SCHEMES, parse_redis_config

    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in REDIS_URL_SCHEMES:
        parser.error(
            f"--url {redact_url(url)!r} is not a cache URL; accepted schemes: "
            + ", ".join(f"{name}://" for name in REDIS_URL_SCHEMES)
        )
    try:
        # The settings' own URL checks (port 1-65535, a host, database 0-15...): a URL
        # that could never be reached is a bad argument, not an unreachable server.
        parse_redis_config({"url": url}, "--url")
    except ConfigurationError as exc:
        parser.error(f"--url {redact_url(url)!r} is not valid: {exc.allowed}")


_OPTIONS = {"env": "--env", "root": "--root"}
"""``configure()`` arguments the command line fills from its options."""


def _as_option(exc: ConfigurationError) -> ConfigurationError:
    """``exc`` naming the command-line option (``--env``) where the value came from one:
    the argument's name (``env``) means nothing to whoever typed ``--env``."""
    option = _OPTIONS.get(exc.key)
    if option is None:
        return exc
    return ConfigurationError(option, exc.value, exc.allowed)


# --- entry point -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from tasker_resilience._operations.drill.runner import DrillError

    if args.command == "drill" and args.url is not None:
        _check_drill_url(parser, args.url)
    handlers = {"drill": _drill, "health": _health, "config": _config, "explain": _explain}
    try:
        code = handlers[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `tasker-resilience config | head -3`: the reader has what it wanted. Point
        # stdout at /dev/null so the interpreter's final flush cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK
    except ConfigurationError as exc:
        print(f"{PROG} {args.command}: configuration error: {_as_option(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except DrillError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
