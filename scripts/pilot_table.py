"""The pilot table of docs/guidance.md from ``scripts/guidance_pilots.sh`` runs (or from a saved JSON).

    python scripts/pilot_table.py runs/pilot --json pilots.json   # collect, save, print Markdown
    python scripts/pilot_table.py docs/results/pilot_2026-11-26/pilots.json

One row per pilot: student top-1, and mean per-class top-1 on the classes the prior never saw
(``unseen``) and on the rest (``seen``), mean ± std over the seeds found, plus the per-class means;
sorted by the unseen-class accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def collect(root: Path) -> dict[str, dict]:
    """``root/<pilot>/<setting>/<method>/images/seed*/summary.json`` -> ``{"<setting>/<pilot>": row}``."""
    out: dict[str, dict] = {}
    for bench in sorted(root.glob("*/bench.json")):
        meta = json.loads(bench.read_text())["settings"]
        for setting, m in meta.items():
            unseen = m["unseen_classes"]
            methods = sorted(bench.parent.glob(f"{setting}/*/images"))
            for pilot in methods:
                runs = [json.loads(f.read_text()) for f in sorted(pilot.glob("seed*/summary.json"))]
                pcs = [r["student_per_class"] for r in runs]
                seen = [c for c in range(len(pcs[0])) if c not in unseen]
                name = bench.parent.name + (f" ({pilot.parent.name})" if len(methods) > 1 else "")
                out[f"{setting}/{name}"] = {
                    "top1": [r["student_top1"] for r in runs],
                    "unseen": [statistics.mean(p[c] for c in unseen) for p in pcs],
                    "seen": [statistics.mean(p[c] for c in seen) for p in pcs],
                    "per_class_mean": [round(statistics.mean(p[c] for p in pcs)) for c in range(len(pcs[0]))]}
    return out


def table(rows: dict[str, dict]) -> str:
    def pm(v: list[float]) -> str:
        return f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.2f}"

    lines = ["| pilot | seeds | student top-1 (%) | unseen classes (%) | seen classes (%) | per class (%) |",
             "|---|---|---|---|---|---|"]
    for key, r in sorted(rows.items(), key=lambda kv: -statistics.mean(kv[1]["unseen"])):
        lines.append(f"| {key.split('/', 1)[1]} | {len(r['top1'])} | {pm(r['top1'])} | {pm(r['unseen'])} "
                     f"| {pm(r['seen'])} | {' '.join(str(v) for v in r['per_class_mean'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="runs/pilot folder, or a JSON saved with --json")
    p.add_argument("--json", type=Path, help="save the collected rows here")
    a = p.parse_args()
    rows = json.loads(a.source.read_text()) if a.source.is_file() else collect(a.source)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows), end="")


if __name__ == "__main__":
    main()
