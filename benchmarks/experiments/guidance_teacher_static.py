import sys, statistics, time, argparse, torch
sys.path.insert(0, "benchmarks")
from synthesis_speed import synthesis_call
args = argparse.Namespace(config="configs/fashion_mnist.yaml", prior="models/fmnist_prior_50k60k_classes0-4", batch=64,
                          set=["fast_ad.ddim_steps=10"])
torch.set_num_threads(2)
recipe = sys.argv[1]
calls = {}
for name in ("eager", "dynamic", "static"):
    parts, gen, call = synthesis_call(recipe, args, [f"distillation.compile={'false' if name == 'eager' else 'true'}"])
    if name == "static":
        parts.synthesizer.teacher = torch.compile(parts.teacher)  # automatic dynamic: static until a 2nd shape
    calls[name] = call
for name, call in calls.items():
    t0 = time.perf_counter()
    for _ in range(3): call()
    print(name, "warm-up", round(time.perf_counter() - t0), "s", flush=True)
T = {n: [] for n in calls}
for _ in range(5):
    for n, c in calls.items():
        t0 = time.perf_counter(); c(); T[n].append(time.perf_counter() - t0)
m = {n: statistics.median(v) for n, v in T.items()}
print(recipe, {n: round(v, 2) for n, v in m.items()}, "eager/dynamic %.2f eager/static %.2f" % (m["eager"] / m["dynamic"], m["eager"] / m["static"]))
