"""Table of `scripts/ood_main_scale.sh` runs: one row per method, mean ± std over every seed found.

    python scripts/main_scale_table.py runs/ood_main_scale [MORE ...] [--json rows.json] [--md table.md]

Each source is an output folder (``<folder>/<run>/out-of-domain/<method>/images/seed*/summary.json``) or rows
saved earlier with ``--json``; their runs are pooled. The unseen classes are those the bench recorded for the
out-of-domain prior (``bench.json``; ``--unseen`` where it is missing).
"""

from __future__ import annotations

import argparse
import json
import statistics as st
from pathlib import Path


def collect(sources: list[Path], unseen_default: list[int] | None = None) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for source in sources:
        if source.is_file():
            for method, runs in json.loads(source.read_text()).items():
                rows.setdefault(method, []).extend(runs)
            continue
        for run in sorted(p for p in source.iterdir() if (p / "out-of-domain").is_dir()):
            bench = run / "bench.json"
            unseen = (json.loads(bench.read_text())["settings"]["out-of-domain"]["unseen_classes"]
                      if bench.is_file() else unseen_default)
            if unseen is None:
                raise SystemExit(f"{bench} is missing: name the unseen classes with --unseen")
            for f in sorted(run.glob("out-of-domain/*/images/seed*/summary.json")):
                d, method = json.loads(f.read_text()), f.parents[2].name
                pc = d["student_per_class"]
                rows.setdefault(method, []).append({
                    "seed": int(f.parent.name[4:]), "top1": d["student_top1"], "unseen": st.mean(pc[c] for c in unseen),
                    "per_class": pc, "images": d["images_synthesized"], "wall_seconds": d["wall_seconds"]})
    return rows


def table(rows: dict[str, list[dict]]) -> str:
    def pm(v: list[float]) -> str:
        return f"{st.mean(v):.2f} ± {st.stdev(v) if len(v) > 1 else 0.0:.2f}"

    lines = ["| method | seeds | student top-1 (%) | unseen classes (%) | per class 0-9 (%, mean) | images | wall s |",
             "|---|---|---|---|---|---|---|"]
    for m, r in sorted(rows.items(), key=lambda kv: -st.mean(x["unseen"] for x in kv[1])):
        pcm = " ".join(str(round(st.mean(x["per_class"][c] for x in r))) for c in range(len(r[0]["per_class"])))
        seeds = ",".join(str(x["seed"]) for x in sorted(r, key=lambda x: x["seed"]))
        lines.append(f"| {m} | {seeds} | {pm([x['top1'] for x in r])} | {pm([x['unseen'] for x in r])} | {pcm} | "
                     f"{r[0]['images']} | {st.mean(x['wall_seconds'] for x in r):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sources", type=Path, nargs="+", help="output folders of scripts/ood_main_scale.sh, or --json files")
    p.add_argument("--unseen", type=int, nargs="+", help="the prior's unseen classes, where bench.json is missing")
    p.add_argument("--json", type=Path, help="save the per-run rows here")
    p.add_argument("--md", type=Path, help="save the Markdown table here")
    a = p.parse_args()
    rows = collect(a.sources, a.unseen)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    if a.md:
        a.md.write_text(table(rows))
    print(table(rows), end="")


if __name__ == "__main__":
    main()
