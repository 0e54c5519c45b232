import time, statistics, sys, torch, threading
from concurrent.futures import ThreadPoolExecutor
from fastad.config import load_config
from fastad.distill import load_teacher
from fastad.models import create_model
from fastad.train.kd import CompiledTeacher, kd_loss
CL = torch.channels_last
cfg = load_config("configs/fashion_mnist.yaml", [])
teacher, _ = load_teacher(cfg, torch.device("cpu"))
torch.set_num_threads(2)
ct2 = CompiledTeacher(teacher)
xs = [torch.randn(128, 1, 28, 28) for _ in range(4)]
with torch.no_grad(): ct2(xs[0])
pool = ThreadPoolExecutor(1)
ct1 = CompiledTeacher(teacher)
def tw(x):
    torch.set_num_threads(1)
    with torch.no_grad(): return ct1(x)
pool.submit(tw, xs[0]).result()
student = create_model("resnet8", num_classes=10, in_channels=1).to(memory_format=CL)
opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
def sstep(x, tl):
    loss = kd_loss(student(x), tl, 4.0); opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); return loss.item()
def serial(n):
    torch.set_num_threads(2)
    for i in range(n):
        with torch.no_grad(): tl = ct2(xs[i % 4])
        sstep(xs[i % 4], tl)
def piped(n):
    torch.set_num_threads(1)
    fut = pool.submit(tw, xs[0])
    for i in range(n):
        tl = fut.result()
        if i + 1 < n: fut = pool.submit(tw, xs[(i + 1) % 4])
        sstep(xs[i % 4], tl)
    torch.set_num_threads(2)
def s1(n):
    torch.set_num_threads(1)
    tl = tw(xs[0])
    for i in range(n): sstep(xs[i % 4], tl)
    torch.set_num_threads(2)
def t1(n):
    for i in range(n): tw(xs[i % 4])
for f in (serial, piped, s1): f(3)
T = {f.__name__: [] for f in (serial, piped, s1, t1)}
for r in range(6):
    for f in (serial, piped, s1, t1):
        t0 = time.perf_counter(); f(10); T[f.__name__].append(100 * (time.perf_counter() - t0))
print({k: round(statistics.median(v), 1) for k, v in T.items()}, "ms/step")
