"""What machine a benchmark ran on, for its results files."""
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(started, threads, load_before, load_after, note: str, hardware: str = "") -> dict:
    """The header every benchmark's JSON results file starts with: when, on what, under which load."""
    import os

    import torch

    return {
        "date_utc": started.isoformat(timespec="seconds"),
        "hardware": hardware or cpu_name(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "note": note,
    }
