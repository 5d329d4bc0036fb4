"""bench/results/latest.json (gitignored): every section's summary rows and samples, the
settings and the versions of one run."""

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

from bench.names import REFERENCE
from bench.report import SectionReport
from bench.settings import Settings

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "latest.json"


def write_json(
    reports: dict[str, SectionReport], settings: Settings, versions: dict[str, str]
) -> None:
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions,
        "settings": asdict(settings),
        "reference": REFERENCE,
        "sections": {
            name: {"summary": r.rows, "samples": r.samples, **r.extra}
            for name, r in reports.items()
        },
    }
    RESULTS_PATH.write_text(json.dumps(document, indent=2) + "\n")
