"""Mean +- std over seeds of each bench folder's runs: overall, unseen and seen, validation and report halves.

    python agg.py ROOT SPLIT_NAME...   e.g.  python agg.py runs/ood_bf16 float32 bf16
(each ROOT/NAME is a `fastad bench --out` folder; the unseen classes come from its bench.json)."""
import glob, json, statistics, sys


def ms(v):
    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"


root, names = sys.argv[1], sys.argv[2:]
print("| run | method | seeds | validation top-1 | report top-1 | unseen, validation | unseen, report | seen, report "
      "| images | per class, full split |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
for name in names:
    bench = json.load(open(f"{root}/{name}/bench.json"))
    unseen = bench["settings"]["out-of-domain"]["unseen_classes"]
    for method in sorted({r["method"] for r in bench["rows"]}):
        files = sorted(glob.glob(f"{root}/{name}/out-of-domain/{method}/time/seed*/split_scores.json"))
        r = {k: [] for k in ("val", "rep", "uval", "urep", "srep", "img")}
        per = []
        for f in files:
            s = json.load(open(f))["scores"]
            summ = json.load(open(f.replace("split_scores.json", "summary.json")))
            r["val"].append(s["validation"]["top1"]); r["rep"].append(s["report"]["top1"])
            r["uval"].append(statistics.mean(s["validation"]["per_class"][c] for c in unseen))
            r["urep"].append(statistics.mean(s["report"]["per_class"][c] for c in unseen))
            r["srep"].append(statistics.mean(s["report"]["per_class"][c] for c in range(10) if c not in unseen))
            r["img"].append(summ["images_synthesized"]); per.append(summ["student_per_class"])
        pc = [round(statistics.mean(p[c] for p in per)) for c in range(10)]
        print(f"| {name} | {method} | {len(files)} | {ms(r['val'])} | {ms(r['rep'])} | {ms(r['uval'])} | "
              f"{ms(r['urep'])} | {ms(r['srep'])} | {statistics.mean(r['img']):.0f} | {' / '.join(map(str, pc))} |")
