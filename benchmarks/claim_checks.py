"""The claim checks of every chapter on both numeric paths, with their margins, in one file.

    .venv/bin/python benchmarks/claim_checks.py --native DIR --emulated DIR [--note TEXT] [--write]

Each DIR is a ``_build/checks`` folder of a book build (``make book`` writes one JSON line per
check there, see chapters/_book.py): ``--native`` from a build on this CPU's kernels,
``--emulated`` from ``make book NUMERICS=emulated``. Prints, per path and chapter, how many
checks ran and held, and the closest calls (the smallest relative slack of a check's
comparisons; 0 is exactly on the boundary, as for integer counts). ``--write`` stores it in
benchmarks/results/claim-checks.json.
"""
import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path


def summarise(folder: Path) -> dict:
    out = {}
    for log in sorted(folder.glob("*.jsonl")):
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        margins = sorted((r["margin"], r["expected"]) for r in rows if r.get("ok") and r.get("margin") is not None)
        positive = [m for m in margins if m[0] > 0]
        out[log.stem] = {
            "checks": len(rows),
            "held": sum(bool(r.get("ok")) for r in rows),
            "failed": [{"expected": r["expected"], "measured": r.get("measured", {})} for r in rows if not r.get("ok")],
            "with_margin": len(margins),
            "at_boundary": len(margins) - len(positive),
            "smallest_positive_margin": positive[0][0] if positive else None,
            "closest": [list(m) for m in positive[:3]],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--native", type=Path, required=True)
    parser.add_argument("--emulated", type=Path, required=True)
    parser.add_argument("--note", default="")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    paths = {"native": summarise(args.native), "emulated": summarise(args.emulated)}
    for path, chapters in paths.items():
        total = sum(c["checks"] for c in chapters.values())
        held = sum(c["held"] for c in chapters.values())
        print(f"{path}: {held} of {total} held")
        for name, c in chapters.items():
            m = c["smallest_positive_margin"]
            print(f"  {name}: {c['held']}/{c['checks']}" + (f", closest {m:.4f}" if m is not None else ""))
    if args.write:
        report = {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "hardware": platform.processor() or platform.machine(), "note": args.note, "paths": paths}
        out = Path(__file__).parent / "results" / "claim-checks.json"
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
