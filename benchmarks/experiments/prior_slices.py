import time, statistics, torch, sys
from fastad.diffusion import load_prior
prior = load_prior("models/fmnist_prior_50k60k_6k")
B = int(sys.argv[1]) if len(sys.argv) > 1 else 64
x, t = torch.randn(B, 1, 28, 28), torch.full((B,), 500)
torch.set_num_threads(2)
def f(flag):
    prior.slice_cpu = flag
    with torch.no_grad(): return prior.eps_fn(x, t)
f(True); f(False)
T = {True: [], False: []}
for i in range(30):
    for flag in (False, True):
        t0 = time.perf_counter(); f(flag); T[flag].append(1000*(time.perf_counter() - t0))
for flag in (False, True):
    v = sorted(T[flag]); print(flag, "median %.1f  p10 %.1f p90 %.1f" % (statistics.median(v), v[3], v[-4]))
print("ratio", statistics.median(T[False]) / statistics.median(T[True]))
