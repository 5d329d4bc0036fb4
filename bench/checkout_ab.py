"""This checkout's gateway against another git revision's, over HTTP/1.1 and HTTP/2.

The revision is checked out with `git worktree add --detach` into a temp dir (removed at
the end) and its gateway runs with PYTHONPATH pointing there; the other runs from this
checkout. Both get the same generated config and proxy to the same nginx, and each load
runs both in interleaved rounds (base first in odd rounds, current first in even ones), so
machine noise hits both alike:

* http1:      wrk -t1 -c50, HTTP/1.1 -> gateway -> nginx over HTTP/1.1 (run.py's http1)
* http2:      h2load -c10 -m10, h2c -> gateway -> nginx over HTTP/1.1 (run.py's http2)
* http2-h2up: the same with h2c to nginx too (run.py's -h2up rows)

    python bench/checkout_ab.py REV [--rounds 3] [--duration 5] [--loads http1,http2]
"""

import contextlib
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# Run as a script, Python puts bench/ first on the path; the package needs the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ab import CpuSample, Pair, ab_parser, ab_settings, h2load_target, run_pairs, wrk_target
from bench.gates import check_hello_h2
from bench.measure import Result, Target
from bench.peers.gateway import gateway_toml, start_configured
from bench.peers.nginx import NGINX, start_nginx
from bench.services import REPO_DIR, Service, sigterm_as_exit, source_env
from bench.settings import Settings
from bench.table import render
from bench.tools import gateway_version, git, missing_tools, tool_version

#: Makes one load's target for a gateway: (gateway, nginx, settings) -> target.
TargetMaker = Callable[[Service, Service, Settings], Target[CpuSample]]
#: Each load: its title, whether its gateways talk h2c to nginx, and its load generator.
LOADS: dict[str, tuple[str, bool, TargetMaker]] = {
    "http1": ("HTTP/1.1 (wrk -t1 -c{connections}) -> gateway -> HTTP/1.1 nginx", False, wrk_target),
    "http2": (
        "h2c (h2load -c{h2_clients} -m{h2_streams}) -> gateway -> HTTP/1.1 nginx",
        False,
        h2load_target,
    ),
    "http2-h2up": (
        "h2c (h2load -c{h2_clients} -m{h2_streams}) -> gateway -> h2c nginx",
        True,
        h2load_target,
    ),
}
#: The issue's budget: neither protocol may lose more than this share of its requests/s.
BUDGET = 0.05


def parse_loads(value: str) -> list[str]:
    loads = [name.strip() for name in value.split(",") if name.strip()]
    if not loads or any(name not in LOADS for name in loads):
        raise SystemExit(f"--loads: choose from {','.join(LOADS)}, got {value!r}")
    return [name for name in LOADS if name in loads]


@contextlib.contextmanager
def checkout(revision: str, dest: Path) -> Iterator[str]:
    """The revision in a detached worktree at `dest`; yields its full commit id."""
    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}")
    git("worktree", "add", "--detach", str(dest), commit)
    try:
        yield commit
    finally:
        git("worktree", "remove", "--force", str(dest))


def check_source(source: Path, tmp: Path) -> None:
    """A gateway started with `source` must import that checkout's package (not, say, an
    editable install's), or the A/B would compare a tree with itself."""
    argv = [sys.executable, "-c", "import gateway; print(gateway.__file__)"]
    env = source_env(source)
    out = subprocess.run(argv, env=env, cwd=tmp, capture_output=True, text=True, check=True)
    imported = Path(out.stdout.strip()).resolve().parent.parent
    if imported != source.resolve():
        raise SystemExit(f"PYTHONPATH={source} imports the gateway from {imported}")


def start_side(
    stack: contextlib.ExitStack, tmp: Path, name: str, source: Path, upstream: int, h2up: bool
) -> Service:
    service = start_configured(
        stack,
        tmp,
        name,
        lambda port: gateway_toml(port, upstream, h2_upstream=h2up),
        source=source,
    )
    check_hello_h2(name, service.port)
    print(
        f"ok   {name:<22} 127.0.0.1:{service.port}  pid {service.proc.pid}  h1 and h2c GET / -> 200"
    )
    return service


def render_load(title: str, base: Result[CpuSample], current: Result[CpuSample]) -> str:
    """Per round and as medians: each side's requests/s and CPU time per request, and
    current/base of each; then the change in the medians against the budget."""
    pairs = list(zip(base.samples, current.samples, strict=True))
    rows = [[str(i), *cells(b, c)] for i, (b, c) in enumerate(pairs, start=1)]
    medians = [
        CpuSample(
            statistics.median(s.rps for s in r.samples),
            0,
            sum(s.errors for s in r.samples),
            statistics.median(s.cpu_us for s in r.samples),
            "",
        )
        for r in (base, current)
    ]
    rows.append(["median", *cells(*medians)])
    rows.append(["errors", str(medians[0].errors), str(medians[1].errors), "", "", "", ""])
    header = ["round", "base req/s", "current", "cur/base", "base CPU us/rq", "current", "cur/base"]
    paired = statistics.median(c.rps / b.rps for b, c in pairs)
    change = medians[1].rps / medians[0].rps - 1
    cpu_change = medians[1].cpu_us / medians[0].cpu_us - 1
    verdict = "DROP OVER" if change < -BUDGET else "within"
    return (
        f"\n{title}\n{render(header, rows)}\n"
        f"req/s {change:+.1%} ({verdict} the {BUDGET:.0%} budget; median of the rounds' "
        f"ratios {paired:.3f}), CPU per request {cpu_change:+.1%}"
    )


def cells(base: CpuSample, current: CpuSample) -> list[str]:
    return [
        *(f"{s.rps:,.0f}" for s in (base, current)),
        f"{current.rps / base.rps:.3f}",
        *(f"{s.cpu_us:.1f}" for s in (base, current)),
        f"{current.cpu_us / base.cpu_us:.3f}",
    ]


def main() -> None:
    parser = ab_parser(__doc__.splitlines()[0], connections=50, h2load=True)
    parser.add_argument("revision", help="the base: a commit, tag or branch")
    parser.add_argument(
        "--loads", type=parse_loads, default=list(LOADS), help=f"subset of {','.join(LOADS)}"
    )
    args = parser.parse_args()
    sections = sorted({"http1" if load == "http1" else "http2" for load in args.loads})
    settings = ab_settings(args, sections)
    if missing := missing_tools(sections):
        raise SystemExit(f"missing: {', '.join(missing)} (see bench/README.md)")
    print(f"cores: {os.cpu_count()}   python {sys.version.split()[0]}")
    for tool, argv in (("nginx", [NGINX, "-v"]), ("wrk", ["wrk", "-v"])):
        print(f"  {tool:<7} {tool_version(argv)}")
    print(f"  h2load  {tool_version(['h2load', '--version'])}")

    with sigterm_as_exit(), contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-ab-")))
        base_src = tmp / "base-src"
        commit = stack.enter_context(checkout(args.revision, base_src))
        base = f"base {commit[:7]}"
        current = f"current {git('rev-parse', '--short', 'HEAD')}"
        print(f"base:    {git('log', '-1', '--format=%h %s', commit)[:100]}")
        print(f"current: {REPO_DIR}, gateway {gateway_version()}")
        for source in (base_src, REPO_DIR):
            check_source(source, tmp)
        nginx, h2_port = start_nginx(stack, tmp)
        # One base/current pair per upstream protocol, shared by the loads that use it.
        gateways: dict[bool, tuple[Service, Service]] = {}
        pairs: list[Pair] = []
        for load in args.loads:
            _, h2up, target = LOADS[load]
            if h2up not in gateways:
                upstream = h2_port if h2up else nginx.port
                suffix = "-h2up" if h2up else ""
                gateways[h2up] = (
                    start_side(stack, tmp, f"base{suffix}", base_src, upstream, h2up),
                    start_side(stack, tmp, f"current{suffix}", REPO_DIR, upstream, h2up),
                )
            a, b = (target(side, nginx, settings) for side in gateways[h2up])
            pairs.append(
                (
                    dataclasses.replace(a, name=f"{load} base"),
                    dataclasses.replace(b, name=f"{load} current"),
                )
            )
        print(
            f"{settings.rounds} interleaved rounds x {settings.duration}s, "
            f"{settings.warmup}s warm-up per target; loads: {', '.join(args.loads)}"
        )
        results = run_pairs(pairs, settings)
    print(f"\n{base} vs {current}; CPU us/rq: the gateway's user + system time per request")
    for load, (base_result, current_result) in zip(args.loads, results, strict=True):
        title = f"{load}: " + LOADS[load][0].format(**vars(args))
        print(render_load(title, base_result, current_result))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the exit stack has stopped everything on its way out
        sys.exit(130)
