import time, statistics, torch, dataclasses
from fastad.diffusion import load_prior
prior = load_prior("models/fmnist_prior_50k60k_6k")
torch.set_num_threads(2)
x, t = torch.randn(64, 1, 28, 28), torch.full((64,), 500)
V = {"eager": prior.unet,
     "frozen": torch.compile(prior.unet, options={"freezing": True}),
     "frozen+cpp_wrapper": torch.compile(prior.unet, options={"freezing": True, "cpp_wrapper": True}),
     "frozen+max-autotune": torch.compile(prior.unet, mode="max-autotune-no-cudagraphs", options={"freezing": True}) if False else None}
V = {k: v for k, v in V.items() if v is not None}
for k, u in V.items():
    t0 = time.time()
    with torch.no_grad(): u(x, t)
    print(k, "first call", round(time.time() - t0, 1), flush=True)
T = {k: [] for k in V}
for i in range(15):
    for k, u in V.items():
        t0 = time.perf_counter()
        with torch.no_grad(): u(x, t)
        T[k].append(1000 * (time.perf_counter() - t0))
print({k: round(statistics.median(v), 1) for k, v in T.items()})
