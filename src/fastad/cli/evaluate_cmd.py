"""``fastad evaluate``: accuracy of a classifier checkpoint on a real test split."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from fastad.cli.common import existing_file, writable_file
from fastad.errors import UserError
from fastad.options import shown


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="top-1/top-5 and per-class accuracy of a checkpoint on a test split",
        description="Evaluate a classifier checkpoint (fastad safetensors with metadata, a zoo {'state_dict': ...} "
                    "file, {'model': ...} or a raw state dict) on a dataset split.",
        epilog="example: fastad evaluate --checkpoint runs/teacher/teacher.safetensors --json eval.json",
    )
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="classifier weights")
    p.add_argument("--dataset", help="dataset name; default: the one recorded in the checkpoint")
    p.add_argument("--root", help="dataset folder; default: the dataset's default location")
    p.add_argument("--split", default="test", choices=("test", "train"), help="split to evaluate (default test)")
    p.add_argument("--range", nargs=2, type=int, metavar=("START", "STOP"),
                   help="only images [START, STOP) of the split (e.g. a validation half: 0 5000)")
    p.add_argument("--arch", help="zoo architecture, for checkpoints without fastad metadata")
    p.add_argument("--num-classes", type=int, help="classes, for checkpoints without fastad metadata")
    p.add_argument("--teacher", metavar="FILE", help="also report the share of images where both predict the same class")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON (with the confusion matrix)")
    p.add_argument("--confusion", metavar="PNG", help="save the row-normalised confusion matrix as a picture")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(run=run)


def load_for_dataset(path: str, ds_info, *, arch=None, num_classes=None, device="cpu", what="checkpoint"):
    """Load a classifier for a dataset; returns (model, mean, std). Checks classes, channels and input size agree."""
    from fastad.models import load_classifier, read_classifier_meta

    meta = read_classifier_meta(existing_file(path, what))
    model, meta = load_classifier(path, arch=arch, num_classes=num_classes or meta.get("num_classes") or ds_info.num_classes,
                                  in_channels=meta.get("in_channels") or ds_info.channels)
    name = f"{what} {shown(str(path))}"
    k = model.num_classes if hasattr(model, "num_classes") else meta.get("num_classes", ds_info.num_classes)
    if k != ds_info.num_classes:
        raise UserError(f"{name} has {k} classes but dataset '{ds_info.name}' has {ds_info.num_classes}")
    channels = meta.get("in_channels")
    if channels is not None and channels != ds_info.channels:
        raise UserError(f"{name} takes {channels} input channels but dataset '{ds_info.name}' has "
                        f"{ds_info.channels}")
    size = meta.get("input_size")
    if size is not None and tuple(size) != tuple(ds_info.image_size):
        raise UserError(f"{name} takes {size[0]}x{size[1]} images but dataset '{ds_info.name}' has "
                        f"{ds_info.image_size[0]}x{ds_info.image_size[1]}")
    mean, std = meta.get("mean") or ds_info.mean, meta.get("std") or ds_info.std
    return model.to(device), mean, std


def run(args: argparse.Namespace) -> None:
    from fastad.data import load_dataset
    from fastad.models import read_classifier_meta
    from fastad.train.evaluate import accuracy_report, plot_confusion, predict
    from fastad.utils.runtime import resolve_device

    device = resolve_device(args.device, "--device")
    if args.batch_size < 1:
        raise UserError(f"--batch-size: got {args.batch_size}; expected an integer >= 1")
    if args.num_classes is not None and args.num_classes < 2:
        raise UserError(f"--num-classes: got {args.num_classes}; expected an integer >= 2")
    if args.json:
        writable_file(args.json, "--json")
    if args.confusion:
        if Path(args.confusion).suffix.lower() != ".png":
            raise UserError(f"--confusion {shown(args.confusion)} must be a .png file")
        writable_file(args.confusion, "--confusion")
    meta = read_classifier_meta(existing_file(args.checkpoint, "checkpoint"))
    if args.teacher:
        existing_file(args.teacher, "--teacher")
    name = args.dataset or meta.get("dataset")
    if not name:
        raise UserError(f"checkpoint {shown(args.checkpoint)} does not record its dataset; pass --dataset")
    ds = load_dataset(name, args.split, root=args.root, index_range=args.range, range_key="--range")
    model, mean, std = load_for_dataset(args.checkpoint, ds.info, arch=args.arch, num_classes=args.num_classes,
                                        device=device)
    teacher = None
    if args.teacher:  # loaded and checked against the data before any prediction
        teacher, tmean, tstd = load_for_dataset(args.teacher, ds.info, device=device, what="--teacher")
    logits, labels = predict(model, ds, mean=mean, std=std, batch_size=args.batch_size, device=device)
    teacher_logits = None
    if teacher is not None:
        teacher_logits, _ = predict(teacher, ds, mean=tmean, std=tstd, batch_size=args.batch_size, device=device)
    report = accuracy_report(logits, labels, num_classes=ds.info.num_classes, teacher_logits=teacher_logits)
    split = f"{args.split}[{args.range[0]}:{args.range[1]}]" if args.range else args.split
    report.update({"checkpoint": args.checkpoint, "dataset": ds.info.name, "split": split,
                   "class_names": list(ds.info.class_names)})
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.confusion:
        plot_confusion(report["confusion"], report["class_names"], args.confusion,
                       title=f"{Path(args.checkpoint).name} on {ds.info.name} {split}")
        print(f"wrote {args.confusion}")


def format_report(r: dict) -> str:
    lines = [f"{r['checkpoint']} on {r['dataset']} {r['split']} ({r['num_images']} images)",
             f"  top-1      {r['top1']:6.2f}%"]
    if "top5" in r:
        lines.append(f"  top-5      {r['top5']:6.2f}%")
    if "agreement" in r:
        lines.append(f"  agreement  {r['agreement']:6.2f}%  (same prediction as the teacher)")
    names = r["class_names"]
    width = max(len(n) for n in names)
    lines.append(f"  {'class':<{width}}  top-1    most often mistaken for")
    for c, (name, acc) in enumerate(zip(names, r["per_class"])):
        row = r["confusion"][c]
        wrong = max((j for j in range(len(row)) if j != c), key=lambda j: row[j], default=None)
        mistaken = f"   {names[wrong]} ({100 * row[wrong] / sum(row):.1f}%)" if wrong is not None and row[wrong] else ""
        lines.append(f"  {name:<{width}}  " + ("   n/a " if math.isnan(acc) else f"{acc:6.2f}%") + mistaken)
    return "\n".join(lines)
