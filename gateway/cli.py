"""The `gateway` command: serve, validate, test, tasks, explain, demo-upstreams.

Operator mistakes (a bad address, a port in use, an admin endpoint that does not answer)
end the command with one line on standard error and status 1, never a traceback."""

import argparse
import contextlib
import gc
import json
import logging
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import NoReturn

import trio

from gateway.config import GatewayConfig, load_config
from gateway.config.load import parse_address
from gateway.errors import ConfigError, StartupError
from gateway.observability.log_format import setup_logging, use_log_format
from gateway.server.reload import reload_from_file
from gateway.server.run import open_gateway
from gateway.version import gateway_version

log = logging.getLogger("gateway")


async def serve(config: GatewayConfig, config_path: str) -> None:
    """Runs until SIGINT/SIGTERM or POST /quitquitquit, then drains and returns. SIGHUP
    reloads the config file."""
    async with open_gateway(config, config_path) as gw:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            log.info("received SIGHUP: reloading %s", config_path)
                            with contextlib.suppress(ConfigError, StartupError):
                                await reload_from_file(gw)  # a rejected reload is logged
                            continue
                        log.info("received %s: draining", signal.Signals(signum).name)
                        gw.request_shutdown()
                        return

                nursery.start_soon(on_signal, name="signal handler")
                await gw.shutdown_requested.wait()
                nursery.cancel_scope.cancel()
        log.info("draining for up to %ss", config.server.drain_timeout)
        # leaving open_gateway drains
    log.info("stopped")


#: Allocations between young-generation collections (CPython's default: 700).
_GC_GEN0_THRESHOLD = 20_000


def _tune_gc() -> None:
    """A proxy allocates a few hundred short-lived objects per request; nearly all are
    freed by reference counting, yet each 700 allocations trigger a cyclic collection.
    Collecting young objects less often measured +11% requests/s (HTTP/1.1, median of 5
    interleaved runs, docs/performance.md); the cyclic garbage it lets pile up is small."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(_GC_GEN0_THRESHOLD, gen1, gen2)


def _summary(config: GatewayConfig) -> str:
    routes = sum(len(v.routes) for v in config.virtual_hosts.values())
    return (
        f"{len(config.listeners)} listener(s), {len(config.virtual_hosts)} virtual host(s), "
        f"{routes} route(s), {len(config.clusters)} cluster(s), "
        f"{len(config.http_filters)} http filter(s)"
    )


def _load(path: str) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.errors)} error(s):", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        raise SystemExit(1) from None


def _fail(command: str, reason: object) -> NoReturn:
    print(f"gateway {command}: {reason}", file=sys.stderr)
    raise SystemExit(1)


def _admin_address(command: str, admin: str) -> str:
    """`--admin` checked as host:port, so a typo is named as such, not as an admin that
    does not answer."""
    try:
        return str(parse_address(admin))
    except ValueError as exc:
        _fail(command, f"bad --admin address: {exc}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__.partition("\n")[0])
    parser.add_argument("--version", action="version", version=f"gateway {gateway_version()}")
    # COMMAND, not the choices: the list would show the internal `_worker`.
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_serve = sub.add_parser("serve", help="run the gateway")
    p_serve.add_argument("config")
    p_serve.add_argument(
        "--log-level",
        default="info",
        type=str.lower,  # INFO as well as info
        choices=["debug", "info", "warning", "error", "critical"],
    )
    p_validate = sub.add_parser("validate", help="check a config file and exit")
    p_validate.add_argument("config")
    p_test = sub.add_parser(
        "test",
        help="run scenario files against a config, in virtual time",
        description="Runs the config's clusters and listeners against the simulated hosts "
        "and clients of each scenario file, in virtual time (docs/testing.md); prints a "
        "report per scenario and exits 1 if any expectation failed.",
    )
    p_test.add_argument("config")
    p_test.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    p_test.add_argument("--access-log", help="write the listeners' access logs to this file")
    p_test.add_argument("--all-stats", action="store_true", help="print zero stats too")
    p_test.add_argument("--json", action="store_true", help="print the reports as JSON")
    p_test.add_argument("--seed", type=int, help="run every scenario with this seed instead")
    p_tasks = sub.add_parser("tasks", help="print a running gateway's live task tree")
    p_tasks.add_argument("--admin", default="127.0.0.1:9901", help="admin address host:port")
    p_tasks.add_argument("--follow", action="store_true", help="keep refreshing the tree")
    p_tasks.add_argument("--interval", default="1s", help="refresh interval with --follow")
    p_tasks.add_argument("--listener", help="only this listener's connections and streams")
    p_tasks.add_argument("--cluster", help="only tasks of this cluster (streams, pools, checks)")
    p_tasks.add_argument("--older-than", help="only tasks older than this duration, e.g. 5s")
    p_tasks.add_argument("--state", help="only tasks whose state contains this text")
    p_tasks.add_argument(
        "--show-query", action="store_true", help="show request URLs with their query strings"
    )
    p_explain = sub.add_parser(
        "explain",
        help="what a running gateway would do with a request, and why",
        description="Asks a running gateway's admin endpoint (/explain) which listener, "
        "filter chain, virtual host, route, filters, cluster and hosts a request would "
        "meet, and why; prints the answer as text.",
    )
    p_explain.add_argument("url", help="the request's URL, e.g. https://api.example.com/v1/x")
    p_explain.add_argument("-X", "--method", default="GET")
    p_explain.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (repeatable)",
    )
    p_explain.add_argument("--source", help="the client's IP:PORT (default 127.0.0.1:0)")
    p_explain.add_argument("--sni", help="the SNI the client sends (default: the URL's host)")
    p_explain.add_argument("--alpn", help="the ALPN protocols it offers, e.g. h2,http/1.1")
    p_explain.add_argument("--listener", help="explain this listener, whatever the URL's port")
    p_explain.add_argument("--json", action="store_true", help="print the JSON answer")
    p_explain.add_argument("--admin", default="127.0.0.1:9901", help="admin address host:port")
    # One worker process of `serve` with `[server] workers` > 1; started by the supervisor.
    # Internal: no help, so `gateway --help` does not list it.
    p_worker = sub.add_parser("_worker")
    p_worker.add_argument("config")
    p_worker.add_argument("--index", type=int, required=True)
    p_worker.add_argument("--ports", default="{}", help="JSON: listener name -> port")
    p_worker.add_argument("--log-level", default="info")
    p_demo = sub.add_parser(
        "demo-upstreams", help="run the echo servers (HTTP, WebSocket, gRPC) gateway.toml routes to"
    )
    p_demo.add_argument(
        "addresses", nargs="*", default=["127.0.0.1:8080", "127.0.0.1:8081"], metavar="ADDRESS"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    setup_logging(getattr(args, "log_level", "info"))
    if args.command == "validate":
        config = _load(args.config)
        if config.dynamic.path is not None:  # the xDS resources are part of the config
            from gateway.xds.file_source import XdsFileSource

            try:
                config = XdsFileSource(config.dynamic.path).compose(config).config
            except ConfigError as exc:
                print(f"{config.dynamic.path}: {len(exc.errors)} error(s):", file=sys.stderr)
                for error in exc.errors:
                    print(f"  {error}", file=sys.stderr)
                raise SystemExit(1) from None
        print(f"{args.config}: OK: {_summary(config)}")
    elif args.command == "test":
        from gateway.testing.command import run_test_command

        config = _load(args.config)
        status = run_test_command(
            config,
            args.scenarios,
            access_log=args.access_log,
            all_stats=args.all_stats,
            as_json=args.json,
            seed=args.seed,
        )
        raise SystemExit(status)
    elif args.command == "tasks":
        from gateway.observability.task_watch import watch_tasks

        admin = _admin_address("tasks", args.admin)
        try:
            filters = {
                key: value
                for key, value in [
                    ("listener", args.listener),
                    ("cluster", args.cluster),
                    ("older_than", args.older_than),
                    ("state", args.state),
                    ("show_query", "true" if args.show_query else None),
                ]
                if value
            }
            trio.run(watch_tasks, admin, args.follow, args.interval, filters)
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            _fail("tasks", f"cannot reach the admin at {admin}: {exc}")
        except ValueError as exc:
            _fail("tasks", f"the admin at {admin} refused: {exc}")
    elif args.command == "explain":
        admin = _admin_address("explain", args.admin)
        try:
            print(admin_explain(admin, args), end="")
        except ValueError as exc:
            _fail("explain", exc)
        except OSError as exc:
            _fail("explain", f"cannot reach the admin at {admin}: {exc}")
    elif args.command in ("serve", "_worker"):
        config = _load(args.config)
        use_log_format(config.server.log_format)
        _tune_gc()
        from gateway.server.supervisor import worker_count
        from gateway.server.workers import run_worker, serve_supervised

        try:
            if args.command == "_worker":
                trio.run(run_worker, args.config, args.index, json.loads(args.ports))
            elif worker_count(config) > 1:
                trio.run(serve_supervised, config, args.config)
            else:
                trio.run(serve, config, args.config)
        except StartupError as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
    else:
        from gateway.demo import serve_demo_upstreams

        try:
            trio.run(serve_demo_upstreams, args.addresses)
        except KeyboardInterrupt:
            pass
        except ValueError as exc:
            _fail("demo-upstreams", f"bad address: {exc}")
        except StartupError as exc:
            _fail("demo-upstreams", exc)


def admin_explain(admin: str, args: argparse.Namespace) -> str:
    """The admin's /explain answer (text, or JSON with --json); ValueError with the
    admin's one-line reason if it refused the question, OSError if it did not answer."""
    params = [("url", args.url), ("method", args.method)]
    params += [("header", header) for header in args.header]
    for name in ("source", "sni", "alpn", "listener"):
        if (value := getattr(args, name)) is not None:
            params.append((name, value))
    params.append(("format", "json" if args.json else "text"))
    url = f"http://{admin}/explain?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return bytes(response.read()).decode()
    except urllib.error.HTTPError as exc:
        reason = exc.read().decode(errors="replace").strip() or f"HTTP {exc.code}"
        raise ValueError(reason.removeprefix("explain: ")) from None
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None
