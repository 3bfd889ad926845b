"""Command line: `segfast train | evaluate | export | demo | bench | doctor | protocols | systems |
options | data check | data docs`, plus every registered job's subcommand (segfast.registry: proposals, cot-cache,
llafs-eval, ...)."""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from segfast import registry


def demo(args) -> int:
    """Trains a tiny LLaFS on generated pseudo pairs and draws what it learned (segfast.demo)."""
    from segfast.demo import run

    result = run(args.out, args.device, args.steps)
    gain = result["after"]["iou"] - result["before"]["iou"]
    print(f"foreground IoU {result['before']['iou']:.3f} -> {result['after']['iou']:.3f} ({gain:+.3f})")
    return 0


def benchmarks() -> list:
    """The benchmark scripts of the source checkout (benchmarks/bench_<name>.py), found, not listed."""
    try:
        import benchmarks as package
    except ImportError:
        return []
    return sorted(p.stem.removeprefix("bench_") for p in Path(package.__file__).parent.glob("bench_*.py"))


def bench(args) -> int:
    import importlib

    if not benchmarks():
        sys.exit("segfast: the benchmarks live in the source checkout; run this from its root directory")
    rest = ["--out", str(args.out), "--device", args.device] + (["--quick"] if args.quick else [])
    for name in benchmarks() if args.op == "all" else (args.op,):
        importlib.import_module(f"benchmarks.bench_{name}").main(rest)
    return 0


def systems_command(args) -> int:
    """The registered systems, datasets and jobs."""
    for s in registry.systems().values():
        print(f"{s.name}: {s.summary}")
        print(
            f"  datasets: {', '.join(s.datasets) or '-'}; jobs: {', '.join(s.jobs) or '-'}; "
            f"special tokens: {len(s.special_tokens)}"
        )
    print("datasets: " + ", ".join(sorted(registry.datasets())))
    print("jobs: " + ", ".join(sorted(registry.jobs())))
    return 0


def options_command(args) -> int:
    """A system's model.options: name, default and where the default comes from."""
    options = registry.system(args.system).options
    if options is None:
        print(f"{args.system} declares no options")
        return 0
    for name, default, source in registry.option_sources(options):
        print(f"{name} = {default!r}\n    {source}")
    return 0


def train_command(args) -> int:
    from segfast.train import load_config, train

    overrides = list(args.overrides) + (["run.resume=true"] if args.resume else [])
    result = train(load_config(args.config, overrides))
    if not result["losses"]:
        print("segfast: nothing to do (already at run.total_steps)")
    return 0


def evaluate_command(args) -> int:
    from segfast.train.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.overrides, args.batches, args.benchmark)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, indent=2))
        if args.benchmark:
            from segfast.train.protocols import get

            protocol = get(args.benchmark)
            print(f"{protocol.describe()}\n{protocol.compare(result)}")
    return 0


def protocols_command(args) -> int:
    """Every benchmark protocol segfast evaluate knows, with the numbers the papers report."""
    from segfast.train.protocols import PROTOCOLS

    for protocol in PROTOCOLS.values():
        print(protocol.describe())
        for r in protocol.reported:
            print(f"  {r.paper} {r.table}, {r.row}: {r.metric} {r.value}")
        print()
    return 0


def data_check_command(args) -> int:
    """Checks a dataset folder against the layout its reader expects (segfast.data.check); without
    --dataset, lists the known layouts."""
    from segfast.data import check

    if not args.dataset:
        print(check.listing())
        return 0
    if not args.root:
        sys.exit("segfast data check: --root is required with --dataset")
    options = dict(o.split("=", 1) for o in args.options if "=" in o)
    bad = [o for o in args.options if "=" not in o]
    if bad:
        sys.exit(f"segfast data check: options are key=value, got {bad[0]!r}")
    try:
        report = check.check(args.dataset, args.root, args.split, options, args.samples)
    except KeyError as exc:
        sys.exit(f"segfast data check: {exc.args[0]}")
    print(report.text())
    return 1 if report.missing else 0


def data_docs_command(args) -> int:
    """Renders docs/data.md from the declared layouts."""
    from segfast.data.check import render_docs

    text = render_docs()
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
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
    nvcc_version = (
        subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
        if nvcc
        else "not found"
    )
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

    triton = (
        "triton not installed"
        if not segfast.kernels.available()
        else "available"
        if cuda
        else "need a GPU (or TRITON_INTERPRET=1)"
    )
    print(f"  triton kernels: {triton}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="segfast", description="segfast: kernels for LLM-based segmentation")
    sub = parser.add_subparsers(dest="command", required=True)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    p = sub.add_parser("demo", help="train a tiny LLaFS on generated data; write prediction and curve PNGs")
    p.add_argument("--out", default="demo-out")
    p.add_argument("--device", default=default_device, choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=1000, help="training steps (8 pseudo pairs each)")
    p.set_defaults(func=demo)
    p = sub.add_parser("bench", help="run the benchmarks (tables and CSVs)")
    p.add_argument("op", nargs="?", default="all", choices=("all", *benchmarks()))
    p.add_argument("--out", default="bench-out")
    p.add_argument("--device", default=default_device, choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true")
    p.set_defaults(func=bench)
    p = sub.add_parser("train", help="train from a YAML config (also under torchrun)")
    p.add_argument("--config", help="YAML file; omitted = the built-in default (toy LLM on synthetic tokens)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in run.output_dir")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-4 run.total_steps=200")
    p.set_defaults(func=train_command)
    p = sub.add_parser(
        "evaluate",
        help="a checkpoint's losses and metrics (gIoU/cIoU, mIoU, per round) on its eval split (also under torchrun)",
    )
    p.add_argument("--checkpoint", required=True, help="a checkpoints/step-* directory")
    p.add_argument("--batches", type=int, default=0, help="micro-batches per process (0 = every sample, once)")
    p.add_argument(
        "--benchmark",
        help="a benchmark protocol (segfast protocols lists them): its split, queries, "
        "prompt, ignore rule, resolution and metric, printed beside the papers' numbers",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.options.root=/data/ade model.path=...")
    p.set_defaults(func=evaluate_command)
    p = sub.add_parser(
        "protocols",
        help="the benchmark protocols of segfast evaluate --benchmark, with the papers' numbers (table and row)",
    )
    p.set_defaults(func=protocols_command)
    p = sub.add_parser("export", help="merge LoRA and save a plain transformers model directory")
    p.add_argument("--checkpoint", required=True, help="a checkpoints/step-* directory")
    p.add_argument("--out", required=True)
    p.set_defaults(func=export_command)

    p = sub.add_parser("data", help="check a dataset folder against its reader's layout; render docs/data.md")
    data = p.add_subparsers(dest="data_command", required=True)
    p = data.add_parser("check", help="what a dataset folder holds and what its reader misses (no training)")
    p.add_argument("--dataset", help="a layout name; omitted = list the known layouts")
    p.add_argument("--root", help="the dataset's folder")
    p.add_argument("--split", action="append", help="check only this split (repeatable; default every split)")
    p.add_argument("--samples", type=int, default=3, help="files parsed per folder (image headers, label maps)")
    p.add_argument("options", nargs="*", help="the layout's path options, key=value (e.g. annotations=...)")
    p.set_defaults(func=data_check_command)
    p = data.add_parser("docs", help="render the layouts as docs/data.md")
    p.add_argument("--out", help="write here (default: print)")
    p.set_defaults(func=data_docs_command)
    p = sub.add_parser("doctor", help="report how segfast was built and what it can use")
    p.set_defaults(func=doctor)
    p = sub.add_parser("systems", help="the registered systems, datasets and jobs")
    p.set_defaults(func=systems_command)
    p = sub.add_parser("options", help="a system's model.options with their defaults and sources")
    p.add_argument("system", choices=sorted(registry.systems()))
    p.set_defaults(func=options_command)
    for job in registry.jobs().values():
        p = sub.add_parser(job.name, help=job.summary)
        job.arguments(p)
        p.set_defaults(func=job.run)
    args = parser.parse_args(argv)
    from segfast.config import ConfigError

    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"segfast: config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
