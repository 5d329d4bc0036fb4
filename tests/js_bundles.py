"""The JavaScript that tests run in node and in Chromium, built at test time.

tests/js/ holds the sources and the npm lockfile. The packages are installed with
`npm ci` into a cache outside the repository (`~/.cache/gateway-tests/npm/LOCKHASH`, or
under `$GATEWAY_TEST_CACHE`), once per lockfile, and the sources are bundled there with
the locked esbuild, once per version of them: neither node_modules nor a bundle is ever
committed. A machine without node and npm, or that cannot reach the npm registry the first
time, skips the tests that need them, saying what is missing.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import attrs

JS = Path(__file__).resolve().parent / "js"
CACHE = Path(os.environ.get("GATEWAY_TEST_CACHE", "~/.cache/gateway-tests")).expanduser() / "npm"
#: Entry points and how esbuild bundles them.
ENTRIES = {
    "node": ("node_main.js", "--platform=node", "--format=cjs"),
    "browser": ("browser_main.js", "--platform=browser", "--format=iife"),
}


class Missing(Exception):
    """What the tests need and this machine lacks, and how to get it."""


@attrs.frozen
class Bundles:
    node: Path
    browser: Path


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _run(args: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> None:
    try:
        result = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise Missing(f"{what} took over 300 s") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise Missing(f"{what} failed: {' / '.join(tail)}")


def _install(npm: str) -> Path:
    """node_modules for the lockfile: installed once into the cache, atomically."""
    lock = JS / "package-lock.json"
    home = CACHE / _digest(JS / "package.json", lock)
    if (home / "node_modules" / ".bin" / "esbuild").exists():
        return home
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=CACHE, prefix="installing-"))
    try:
        shutil.copy(JS / "package.json", work)
        shutil.copy(lock, work)
        _run(
            [
                npm,
                "ci",
                "--ignore-scripts",  # esbuild's binary comes in its platform package
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                f"--cache={CACHE / '_cacache'}",
            ],
            work,
            f"npm ci (needs the npm registry once; the packages are then kept in {CACHE})",
        )
        try:
            work.rename(home)
        except OSError:  # another test run installed it first: use theirs
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return home


def build() -> Bundles:
    """The bundles for the current sources; Missing if they cannot be made here."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise Missing("needs node and npm: apt-get install nodejs npm")
    home = _install(npm)
    sources = sorted(JS.glob("*.js"))
    out = home / "bundles" / _digest(*sources)
    if not all((out / f"{name}.js").exists() for name in ENTRIES):
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NODE_PATH": str(home / "node_modules")}
        for name, (entry, *flags) in ENTRIES.items():
            target = out / f"{name}.js"
            _run(
                [
                    str(home / "node_modules" / ".bin" / "esbuild"),
                    str(JS / entry),
                    "--bundle",
                    *flags,
                    f"--outfile={target}.tmp",
                    "--log-level=error",
                ],
                JS,
                f"esbuild {entry}",
                env,
            )
            os.replace(f"{target}.tmp", target)
    return Bundles(out / "node.js", out / "browser.js")
