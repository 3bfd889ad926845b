"""Command line: `segfast train | evaluate | export | predict | convert | serve | demo | bench |
doctor | protocols | systems | options | data check | data docs`, plus every registered job's
subcommand (segfast.registry: proposals, cot-cache, llafs-eval, ...)."""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from segfast import registry


def demo(args) -> int:
    """Trains a tiny LLaFS on generated pseudo pairs and draws what it learned (segfast.demo)."""
    from segfast.demo import run

    result = run(args.out, args.device, args.steps)
    before, after = result["before"], result["after"]
    print(
        f"LLM polygon IoU {before['polygon_iou']:.3f} -> {after['polygon_iou']:.3f}, refined-mask IoU "
        f"{before['iou']:.3f} -> {after['iou']:.3f} ({after['samples']} held-out pairs, "
        f"{result['seconds']:.0f} s of training)"
    )
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
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Trained, saved and the process group destroyed: leave without the interpreter's teardown.
        # Under torchrun a torch/gloo thread still joinable at exit sometimes aborts a worker
        # ("terminate called without an active exception", exit -6) after a complete run, which
        # torchrun then reports as a failed job (seen once in CI-like runs).
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
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


def predict_command(args) -> int:
    """Masks, overlays and answers for images and queries (segfast.inference.batch)."""
    from segfast.inference import load
    from segfast.inference.batch import items_from, run

    try:
        items = items_from(args)
        settings = json.loads(args.settings) if args.settings else {}
        predictor = load(args.checkpoint, device=args.device, dtype=args.dtype, **settings)
        done = run(predictor, items, args.out, args.batch_size, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"segfast predict: {exc}")
    print(f"{done} prediction(s) of {predictor.system} written to {args.out} (predictions.jsonl lists them)")
    return 0


def convert_command(args) -> int:
    """An authors' released checkpoint as a segfast checkpoint (segfast.inference.convert)."""
    from segfast.inference.convert import REPORT, convert

    try:
        convert(args.system, args.source, args.out, clip=args.clip, llava=args.llava, dinov2=args.dinov2)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        sys.exit(f"segfast convert: {exc}")
    print(f"wrote {args.out} (every key: {Path(args.out) / REPORT}); try: segfast predict --checkpoint {args.out} ...")
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


def serve_command(args) -> int:
    """The interactive page over a checkpoint (segfast.serve), until Ctrl-C."""
    from segfast.inference import load
    from segfast.serve import launch, require_gradio
    from segfast.train.checkpoint import CheckpointError

    try:
        settings = json.loads(args.settings or "{}")
    except json.JSONDecodeError as exc:
        sys.exit(f"segfast serve: --settings is not JSON ({exc})")
    try:
        require_gradio()  # before the minutes a large model takes to load
        predictor = load(args.checkpoint, device=args.device, dtype=args.dtype, **settings)
    except (ImportError, ValueError, FileNotFoundError, CheckpointError) as exc:
        sys.exit(f"segfast serve: {exc}")
    launch(predictor, host=args.host, port=args.port, title=f"segfast {predictor.system}: {args.checkpoint}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="segfast", description="segfast: kernels for LLM-based segmentation")
    sub = parser.add_subparsers(dest="command", required=True)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    p = sub.add_parser("demo", help="train a tiny LLaFS on generated data; write prediction and curve PNGs")
    p.add_argument("--out", default="demo-out")
    p.add_argument("--device", default=default_device, choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=None, help="training steps (8 pseudo pairs each; default: the demo's)")
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

    p = sub.add_parser(
        "predict", help="masks (PNG + COCO RLE), overlays and answers for images and queries, from a checkpoint"
    )
    p.add_argument("--checkpoint", required=True, help="a segfast checkpoint (or run directory, or segfast convert's)")
    p.add_argument("--image", help="one image")
    p.add_argument("--images", help="a folder of images (searched recursively), each asked --query")
    p.add_argument("--pairs", help="a JSON list of {image, query} (or {image, rounds}) objects")
    p.add_argument("--query", action="append", help="the question (repeat for several, or rounds with --chat)")
    p.add_argument("--chat", action="store_true", help="SegLLM: the queries are rounds of one conversation")
    p.add_argument("--classes", help="LaSagnA: comma-separated class names")
    p.add_argument("--support", action="append", help="LLaFS: IMAGE:MASK support pair (repeat for k shots)")
    p.add_argument("--out", default="predictions")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU when there is one)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="the language model's (default bf16 on CUDA)")
    p.add_argument("--settings", help='inference settings as JSON, e.g. \'{"question": "<image> {query}"}\'')
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=predict_command)
    p = sub.add_parser("convert", help="an authors' released checkpoint -> a segfast checkpoint, every key reported")
    p.add_argument("--system", required=True, help="whose release: lisa, lasagna, ...")
    p.add_argument("--from", dest="source", required=True, help="the release's directory (LLM-Seg: DeepSpeed's)")
    p.add_argument("--out", required=True, help="a new directory for the segfast checkpoint")
    p.add_argument("--clip", help="local CLIP vision model the release's mm_vision_tower names (its config)")
    p.add_argument("--llava", help="llm-seg: the base LLaVA directory it was trained from (config.json, tokenizer)")
    p.add_argument("--dinov2", help="llm-seg: a local transformers Dinov2Model (its config; weights if none released)")
    p.set_defaults(func=convert_command)

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
    p = sub.add_parser(
        "serve", help="an interactive page over a checkpoint: upload an image, ask, see the overlay, get the masks"
    )
    p.add_argument("--checkpoint", required=True, help="a segfast checkpoint (or run directory, or segfast convert's)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU when there is one)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="the language model's (default bf16 on CUDA)")
    p.add_argument("--settings", help='inference settings as JSON, e.g. \'{"question": "<image> {query}"}\'')
    p.set_defaults(func=serve_command)
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
