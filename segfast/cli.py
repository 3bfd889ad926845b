"""Command line: `segfast demo | bench | doctor`."""

import argparse
import math
import sys
from pathlib import Path

import torch


def demo(args) -> int:
    """Rasterizes LLaFS-style 16-point answers and a two-part COCO object under both rules,
    writes a picture of them, and prints the quick rasterization benchmark."""
    from segfast import viz
    from segfast.ops import rasterize_polygons

    size = 256
    g = torch.Generator().manual_seed(0)
    angle = (torch.arange(16) * 2 * math.pi / 16).double()
    polys = []
    for centre, r in [((70, 70), 50), ((180, 80), 45), ((90, 185), 55), ((190, 190), 40)]:
        radius = r * (0.6 + 0.4 * torch.rand(16, generator=g, dtype=torch.float64))
        polys.append(torch.stack([centre[0] + radius * torch.cos(angle), centre[1] + radius * torch.sin(angle)], -1))
    vertices = torch.stack(polys)
    groups = torch.tensor([0, 1, 2, 1])  # polygons 1 and 3 are two parts of one object
    panels = []
    for rule in ("center", "coco"):
        masks = rasterize_polygons(vertices, size, size, groups=groups, num_masks=3, rule=rule)
        img = viz.overlay(masks)
        for p in vertices:
            viz.draw_points(img, p)
        panels.append(img)
    center = rasterize_polygons(vertices, size, size, groups=groups, num_masks=3).any(0)
    coco = rasterize_polygons(vertices, size, size, groups=groups, num_masks=3, rule="coco").any(0)
    diff = torch.full((size, size, 3), 24, dtype=torch.uint8)
    diff[center & coco] = torch.tensor([90, 90, 90], dtype=torch.uint8)
    diff[center & ~coco] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    diff[coco & ~center] = torch.tensor([255, 80, 80], dtype=torch.uint8)
    gap = torch.full((size, 4, 3), 255, dtype=torch.uint8)
    picture = torch.cat([panels[0], gap, panels[1], gap, diff], 1)
    path = viz.save_png(Path(args.out) / "rasterize_demo.png", picture)
    print(f"wrote {path}: center rule | coco rule | difference "
          f"(blue: center only {int((center & ~coco).sum())} px, red: coco only {int((coco & ~center).sum())} px)")
    from segfast.train import load_config, train

    print("\ntraining the built-in toy LLM (LoRA) on synthetic tokens: segfast train run.total_steps=60")
    result = train(load_config(overrides=["run.total_steps=60", f"run.output_dir={Path(args.out) / 'toy-run'}",
                                          "optim.lr=2e-2", "run.save_every=60"]))
    losses = result["losses"]
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps; checkpoint in "
          f"{Path(args.out) / 'toy-run' / 'checkpoints'}\n")
    _bench_module().main(["--quick", "--repeats", "3", "--device", args.device, "--out", str(args.out)])
    return 0


BENCHMARKS = ("rasterize", "overlap", "pooling", "ohem", "attention", "train")


def _bench_module(name="rasterize"):
    import importlib

    try:
        return importlib.import_module(f"benchmarks.bench_{name}")
    except ImportError:
        sys.exit("segfast: the benchmarks live in the source checkout; run this from its root directory")


def bench(args) -> int:
    rest = ["--out", str(args.out), "--device", args.device] + (["--quick"] if args.quick else [])
    for name in BENCHMARKS if args.op == "all" else (args.op,):
        _bench_module(name).main(rest)
    return 0


def train_command(args) -> int:
    from segfast.train import load_config, train

    overrides = list(args.overrides) + (["run.resume=true"] if args.resume else [])
    result = train(load_config(args.config, overrides))
    if not result["losses"]:
        print("segfast: nothing to do (already at run.total_steps)")
    return 0


def export_command(args) -> int:
    from segfast.train.export import export

    print(f"exported to {export(args.checkpoint, args.out)}")
    return 0


def doctor(args) -> int:
    """Versions, what segfast can use here, and why not where it cannot."""
    import importlib.metadata
    import shutil
    import subprocess

    import segfast
    from segfast.models.llm import choose_attention

    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    nvcc = shutil.which("nvcc")
    nvcc_version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1] \
        if nvcc else "not found"
    cuda = torch.cuda.is_available()
    device = torch.device("cuda") if cuda else torch.device("cpu")
    print(f"segfast {segfast.__version__}; torch {torch.__version__} (CUDA {torch.version.cuda}); nvcc: {nvcc_version}")
    for dist in ("triton", "flash-attn", "transformers", "peft", "segment-anything", "pycocotools"):
        print(f"  {dist}: {version(dist)}")
    print(f"CUDA device: {torch.cuda.get_device_name() if cuda else 'none'}")
    print(f"bf16: {'supported' if cuda and torch.cuda.is_bf16_supported() else 'no (CPU runs train in fp32)'}")
    impl, why = choose_attention("auto", device)
    print(f"LLM attention: {impl} ({why})")
    info = segfast.build_info()
    print(f"extension: {info}")
    from segfast._extension import missing_reason

    for device_type in ("cpu", "cuda"):
        reason = missing_reason(torch.device(device_type))
        if reason is None and device_type == "cuda" and not cuda:
            reason = "built, but there is no CUDA device"
        print(f"  compiled {device_type} kernels: {'available' if reason is None else reason}")
    import segfast.kernels

    triton_ok = segfast.kernels.available()
    print(f"  triton kernels: {'available' if triton_ok and cuda else 'triton not installed' if not triton_ok else 'need a GPU (or TRITON_INTERPRET=1)'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="segfast", description="segfast: kernels for LLM-based segmentation")
    sub = parser.add_subparsers(dest="command", required=True)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    p = sub.add_parser("demo", help="rasterize polygons, write a PNG, print the quick benchmark")
    p.add_argument("--out", default="demo-out")
    p.add_argument("--device", default=default_device, choices=["cpu", "cuda"])
    p.set_defaults(func=demo)
    p = sub.add_parser("bench", help="run the benchmarks (tables and CSVs)")
    p.add_argument("op", nargs="?", default="all", choices=("all", *BENCHMARKS))
    p.add_argument("--out", default="bench-out")
    p.add_argument("--device", default=default_device, choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true")
    p.set_defaults(func=bench)
    p = sub.add_parser("train", help="train from a YAML config (also under torchrun)")
    p.add_argument("--config", help="YAML file; omitted = the built-in default (toy LLM on synthetic tokens)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in run.output_dir")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-4 run.total_steps=200")
    p.set_defaults(func=train_command)
    p = sub.add_parser("export", help="merge LoRA and save a plain transformers model directory")
    p.add_argument("--checkpoint", required=True, help="a checkpoints/step-* directory")
    p.add_argument("--out", required=True)
    p.set_defaults(func=export_command)
    p = sub.add_parser("doctor", help="report how segfast was built and what it can use")
    p.set_defaults(func=doctor)
    args = parser.parse_args(argv)
    from segfast.train.config import ConfigError

    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"segfast: config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
