"""Running a load generator's command, and the time units they print."""

import subprocess

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def to_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def run_tool(argv: list[str], duration: int) -> str:
    """Runs a load of `duration` seconds; its stdout, or RuntimeError if it failed."""
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return out.stdout
