"""What the processes logged: per section a summary (a traceback storm in a few lines), at
the end the tail of every log, and on request a copy of every log and config."""

import re
import shutil
from collections import Counter
from pathlib import Path

from bench.services import Service, log_tail


def log_offsets(services: list[Service]) -> dict[Path, int]:
    return {s.log: s.log.stat().st_size if s.log.exists() else 0 for s in services}


_TIMESTAMP_RE = re.compile(r"^\[?\d{4}[-/]\d\d[-/]\d\d[ T][\d:.,]+\]?\s*")
_NOT_HEADLINE = ("Traceback", "During handling", "The above exception", "+", "|")


def log_summary(path: Path, offset: int, top: int = 8) -> tuple[int, list[str]]:
    """Lines logged since `offset`, and the most frequent message and exception lines
    (timestamps dropped, numbers as N) with counts: a traceback storm in a few lines."""
    with path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    headlines: Counter[str] = Counter()
    for line in lines:
        if line and not line[0].isspace() and not line.startswith(_NOT_HEADLINE):
            headlines[re.sub(r"\b\d+\b", "N", _TIMESTAMP_RE.sub("", line))[:200]] += 1
    return len(lines), [f"{n:>6} x {text}" for text, n in headlines.most_common(top)]


def report_logs(section: str, services: list[Service], offsets: dict[Path, int]) -> None:
    """What each process logged (at warning and above) while this section ran."""
    for service in services:
        count, top = log_summary(service.log, offsets.get(service.log, 0))
        if count:
            print(f"\n--- {service.name}: {count} log lines during {section}; most frequent:")
            print("\n".join(top))


def keep_logs(tmp: Path, dest: Path) -> None:
    """Copies logs and generated configs out of the temp dir before it is removed."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in tmp.iterdir():
        if path.is_file() and path.suffix in (".log", ".toml", ".yaml", ".conf"):
            shutil.copy2(path, dest / path.name)
    print(f"logs and configs kept in {dest}")


def print_log_tails(tmp: Path) -> None:
    """The end of every non-empty log, whatever section it belongs to."""
    for log in sorted(tmp.glob("*.log")):
        if log.stat().st_size:
            print(f"\n--- {log.stem} log (tail) ---\n{log_tail(log, 12)}")
