"""Same teacher, prior, student and image count; only ``fast_ad.guidance`` changes.

Runs ``fastad distill`` once per (guidance, seed), one after another (a shared machine's cores are
not split between runs), and prints a Markdown table of student top-1 (mean and spread over seeds),
the teacher's agreement with the target class on the synthesised images, and the time split.

    python benchmarks/guidance_ablation.py --config configs/fashion_mnist.yaml \\
        --guidance none cadr fixed --seeds 0 1 2 --out runs/guidance_ablation

Extra ``--set`` overrides apply to every run. Finished runs (with a summary.json) are reused, so an
interrupted ablation resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def run_one(config: str, guidance: str, seed: int, out: Path, sets: list[str]) -> dict:
    if not (out / "summary.json").is_file():
        cmd = [sys.executable, "-m", "fastad", "distill", "--config", config, "--guidance", guidance,
               "--seed", str(seed), "--out", str(out), "--set", "logging.progress=false"]
        for s in sets:
            cmd += ["--set", s]
        if (out / "last.pt").is_file():
            cmd = [sys.executable, "-m", "fastad", "distill", "--resume", str(out)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    summary["agreement"] = statistics.mean(r["synthesis/teacher_agreement"] for r in rows)
    return summary


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--guidance", nargs="+", default=["none", "cadr", "fixed"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default="runs/guidance_ablation")
    args = ap.parse_args()

    results = {g: [run_one(args.config, g, s, Path(args.out) / f"{g}-seed{s}", args.set) for s in args.seeds]
               for g in args.guidance}
    lines = ["| guidance | student top-1 (%) | teacher agrees with target (%) | images | synthesis s | training s |",
             "|---|---|---|---|---|---|"]
    for g, runs in results.items():
        lines.append(f"| {g} | {spread([r['student_top1'] for r in runs])} | {spread([r['agreement'] for r in runs])} "
                     f"| {runs[0]['images_synthesized']} | {spread([r['synthesis_seconds'] for r in runs])} "
                     f"| {spread([r['training_seconds'] for r in runs])} |")
    teacher = results[args.guidance[0]][0]["teacher_top1"]
    table = "\n".join(lines) + f"\n\nTeacher top-1: {teacher:.2f}%. Seeds: {args.seeds}.\n"
    print(table)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.md").write_text(table)
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
