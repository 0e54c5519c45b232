import time, statistics, torch, dataclasses
from concurrent.futures import ThreadPoolExecutor
from fastad.diffusion import load_prior
prior = load_prior("models/fmnist_prior_50k60k_6k")
torch.set_num_threads(2)
cp2 = dataclasses.replace(prior, unet=torch.compile(prior.unet, options={"freezing": True}))
cp1 = dataclasses.replace(prior, unet=torch.compile(prior.unet, options={"freezing": True}))
x, t = torch.randn(64, 1, 28, 28), torch.full((64,), 500)
def one():
    torch.set_num_threads(1)
pool = ThreadPoolExecutor(2)
def full():
    with torch.no_grad(): return cp2.eps_fn(x, t)
def half(i):
    torch.set_num_threads(1)
    with torch.no_grad(): return cp1.eps_fn(x[32*i:32*i+32], t[32*i:32*i+32])
def split():
    r = torch.cat(list(pool.map(half, range(2)))); torch.set_num_threads(2); return r
def run(fn, n=12):
    for _ in range(3): fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1000
t0=time.time(); full(); print("compile full", time.time()-t0)
t0=time.time(); split(); print("compile split", time.time()-t0)
for rep in range(3):
    a = run(full); c = run(split)
    print(f"compiled full@2t {a:.1f} ms  split 2x1t {c:.1f} ms  ratio {a/c:.2f}", torch.get_num_threads())
print((full() - split()).abs().max())
