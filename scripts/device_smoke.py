"""Smoke test of the device path: teacher training, distillation (every guidance mode) and sampling
on tiny random models and synthetic IDX data, on the device given (default cuda).

    python scripts/device_smoke.py --device cuda --out /tmp/smoke

Checks that library code follows the run's device (no CPU/GPU tensor mix-ups); accuracy is
meaningless here. Prints one line per step and exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_fmnist_like  # noqa: E402

from fastad.cli.main import main as fastad  # noqa: E402
from fastad.diffusion import build_unet, save_prior  # noqa: E402


def step(name: str, args: list) -> None:
    t = time.time()
    rc = fastad([str(a) for a in args])
    print(f"{name}: rc={rc} ({time.time() - t:.1f}s)", flush=True)
    if rc != 0:
        sys.exit(rc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="runs/device_smoke")
    a = ap.parse_args()
    out = Path(a.out)
    data = make_fmnist_like(out / "data", n_train=512, n_test=256)
    common = ["--device", a.device, "--set", f"data.root={data}", "--set", "logging.progress=false"]
    step("train-teacher", ["train-teacher", "--dataset", "fashion_mnist", "--arch", "resnet8", "--epochs", "1", "--out", out / "teacher",
                           "--set", "data.train_range=null", *common])
    unet = build_unet(sample_size=28, in_channels=1, block_out_channels=(16, 32, 32))
    save_prior(out / "prior", unet, num_train_timesteps=1000, overwrite=True)
    for guidance in ("cadr", "fixed", "none"):
        for extra in ([], ["--set", "fast_ad.grad_mode=full", "--set", "fast_ad.beta_adv=0.5"]):
            if guidance == "none" and extra:
                continue
            step(f"distill {guidance} {' '.join(extra[1::2])}",
                 ["distill", "--config", "configs/fashion_mnist.yaml", "--teacher", out / "teacher/teacher.safetensors",
                  "--prior", out / "prior", "--guidance", guidance, "--epochs", "2", "--out",
                  out / f"distill-{guidance}-{len(extra)}", "--set", "distillation.train_iterations=3",
                  "--set", "distillation.eval_every=1", "--set", "fast_ad.ddim_steps=3", *common, *extra])
    step("sample", ["sample", "--prior", out / "prior", "--teacher", out / "teacher/teacher.safetensors",
                    "--n", "16", "--steps", "5", "--device", a.device, "--out", out / "sample.png"])
    print("device smoke passed on", torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device)


if __name__ == "__main__":
    main()
