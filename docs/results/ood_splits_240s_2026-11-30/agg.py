"""Mean +- std over seeds of the lanes' runs: overall and unseen, validation and report halves."""
import json, glob, statistics, sys
UNSEEN = {"classes0-4": [5, 6, 7, 8, 9], "classes5-9": [0, 1, 2, 3, 4], "classes0-2-4-6-8": [1, 3, 5, 7, 9]}
def ms(v): return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"
p = sys.argv[1] if len(sys.argv) > 1 else ""
B = sys.argv[2] if len(sys.argv) > 2 else "240"
rows = []
for split in ["classes0-4", "classes5-9", "classes0-2-4-6-8"]:
    for name, method in [("none" + B, "none"), ("x0s" + B, "x0-routed-smooth")]:
        files = sorted(glob.glob(f"runs/{name}/{split}/out-of-domain/{method}/time/seed*/split_scores.json"))
        if name == "x0s240":  # seed 0 ran first, as the pilot
            files += sorted(glob.glob(f"runs/base240/{split}/out-of-domain/{method}/time/seed0/split_scores.json"))
        r = {k: [] for k in ("val", "rep", "uval", "urep", "img", "srep")}
        per = []
        for f in files:
            s = json.load(open(f))["scores"]
            summ = json.load(open(f.replace("split_scores.json", "summary.json")))
            r["val"].append(s["validation"]["top1"]); r["rep"].append(s["report"]["top1"])
            r["uval"].append(statistics.mean(s["validation"]["per_class"][c] for c in UNSEEN[split]))
            r["urep"].append(statistics.mean(s["report"]["per_class"][c] for c in UNSEEN[split]))
            r["srep"].append(statistics.mean(s["report"]["per_class"][c] for c in range(10) if c not in UNSEEN[split]))
            r["img"].append(summ["images_synthesized"]); per.append(summ["student_per_class"])
        if not files:
            continue
        pc = [round(statistics.mean(p[c] for p in per)) for c in range(10)]
        print(f"| {split} | {method} | {len(files)} | {ms(r['val'])} | {ms(r['rep'])} | {ms(r['uval'])} | {ms(r['urep'])} | {ms(r['srep'])} | {statistics.mean(r['img']):.0f} | {' / '.join(map(str, pc))} |")
