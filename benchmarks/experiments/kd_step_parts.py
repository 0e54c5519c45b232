import time, statistics, sys, torch, copy
from fastad.config import load_config
from fastad.distill import load_teacher
from fastad.models import create_model
from fastad.train.kd import CompiledTeacher, kd_loss
torch.set_num_threads(int(sys.argv[1]))
CL = torch.channels_last
cfg = load_config("configs/fashion_mnist.yaml", [])
teacher, _ = load_teacher(cfg, torch.device("cpu"))
ct = CompiledTeacher(teacher)
x = torch.randn(128, 1, 28, 28)
with torch.no_grad(): ct(x)
student = create_model("resnet8", num_classes=10, in_channels=1).to(memory_format=CL)
print("student params", sum(p.numel() for p in student.parameters()), "teacher", sum(p.numel() for p in teacher.parameters()))
opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
T = {k: [] for k in ["teacher", "s_fwd", "bwd", "opt"]}
for i in range(40):
    t0 = time.perf_counter()
    with torch.no_grad(): tl = ct(x)
    t1 = time.perf_counter()
    loss = kd_loss(student(x), tl, 4.0)
    t2 = time.perf_counter()
    opt.zero_grad(set_to_none=True); loss.backward()
    t3 = time.perf_counter()
    opt.step(); loss.item()
    t4 = time.perf_counter()
    if i >= 5:
        for k, a, b in [("teacher", t0, t1), ("s_fwd", t1, t2), ("bwd", t2, t3), ("opt", t3, t4)]:
            T[k].append(1000 * (b - a))
print({k: round(statistics.median(v), 1) for k, v in T.items()}, "total", round(sum(statistics.median(v) for v in T.values()), 1))
