import sys, statistics, time, argparse, torch
sys.path.insert(0, "benchmarks")
from synthesis_speed import synthesis_call
args = argparse.Namespace(config="configs/fashion_mnist.yaml", prior="models/fmnist_prior_50k60k_classes0-4", batch=64,
                          set=["fast_ad.ddim_steps=10"])
torch.set_num_threads(2)
for recipe in sys.argv[1:]:
    parts, gen, call = synthesis_call(recipe, args)
    prior = parts.synthesizer.prior
    def run(flag):
        prior.slice_cpu = flag; t0 = time.perf_counter(); call(); return time.perf_counter() - t0
    for _ in range(2): run(True); run(False)
    T = {True: [], False: []}
    for _ in range(4):
        for f in (True, False): T[f].append(run(f))
    a, b = statistics.median(T[False]), statistics.median(T[True])
    print(f"{recipe}: unsliced {a:.2f} s sliced {b:.2f} s ratio {a/b:.2f}", flush=True)
