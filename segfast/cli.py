"""Command line: `segfast demo | bench | doctor`."""

import argparse
import json
import os
import sys

import torch


def demo(args) -> int:
    """Trains a tiny LLaFS on generated pseudo pairs and draws what it learned (segfast.demo)."""
    from segfast.demo import run

    result = run(args.out, args.device, args.steps)
    gain = result["after"]["iou"] - result["before"]["iou"]
    print(f"foreground IoU {result['before']['iou']:.3f} -> {result['after']['iou']:.3f} ({gain:+.3f})")
    return 0


BENCHMARKS = ("rasterize", "overlap", "pooling", "ohem", "attention", "train", "proposals")


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


def cot_cache_command(args) -> int:
    from segfast.models.llavaseg.cache import cache_chain_of_thought
    from segfast.train import load_config

    result = cache_chain_of_thought(load_config(args.config, args.overrides), args.splits, args.batch_size,
                                    args.workers)
    parsed = "" if result["parsed"] is None else f", target and attributes parsed in {result['parsed']:.1%}"
    print(f"rank {result['rank']}: {result['generated']} answers generated, {result['already_cached']} already "
          f"cached{parsed}")
    return 0


def export_command(args) -> int:
    from segfast.train.export import export

    print(f"exported to {export(args.checkpoint, args.out)}")
    return 0


def llafs_eval(args) -> int:
    from segfast.models.llafs.evaluate import evaluate_fold
    from segfast.train.checkpoint import load_trained

    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = evaluate_fold(load_trained(args.checkpoint, device), args.root, args.dataset, args.fold, args.shots,
                           args.episodes, args.batch_size, attributes=args.attributes, device=device)
    for cls, iou in result["per_class"].items():
        print(f"  class {cls:3d}: IoU {iou:.4f}")
    print(f"{args.dataset} fold {args.fold}, {args.shots}-shot: mean foreground IoU {result['mIoU']:.4f} "
          f"(answers parsed {result['parsed']:.1%})")
    from segfast.train.protocols import for_fold

    protocol = for_fold(args.dataset, args.fold, args.shots)
    if protocol is not None and args.episodes == 1000:
        print(f"{protocol.describe()}\n{protocol.compare({'eval/fold/mIoU': result['mIoU'], 'eval/samples': 1000})}")
    return 0


def proposals_command(args) -> int:
    from segfast.models.sam.extract import extract_proposals

    settings = dict(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
                    pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh,
                    box_nms_thresh=args.box_nms_thresh, crop_n_layers=args.crop_n_layers,
                    min_mask_region_area=args.min_mask_region_area, image_batch=args.image_batch)
    result = extract_proposals(args.images, args.out, model_type=args.model_type, checkpoint=args.checkpoint,
                               top_k=args.top_k, device=args.device, workers=args.workers, **settings)
    per_image = result["seconds_per_image"]
    print(f"rank {result['rank']}: {result['done']} images done, {result['skipped']} already there, "
          f"{len(result['failed'])} failed" + (f", {per_image:.3f} s/image" if per_image is not None else ""))
    if result["failed"]:
        shown = "\n".join(f"  {f['image']}: {f['error']}" for f in result["failed"][:10])
        more = len(result["failed"]) - 10
        print(f"rank {result['rank']}: images that could not be read (all in {result['failures_file']}; the next "
              f"run tries them again):\n{shown}" + (f"\n  ... and {more} more" if more > 0 else ""))
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
    p = sub.add_parser("demo", help="train a tiny LLaFS on generated data; write prediction and curve PNGs")
    p.add_argument("--out", default="demo-out")
    p.add_argument("--device", default=default_device, choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=1000, help="training steps (8 pseudo pairs each)")
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
    p = sub.add_parser("evaluate", help="a checkpoint's losses and metrics (gIoU/cIoU, mIoU, per round) on its "
                                        "eval split (also under torchrun)")
    p.add_argument("--checkpoint", required=True, help="a checkpoints/step-* directory")
    p.add_argument("--batches", type=int, default=0, help="micro-batches per process (0 = every sample, once)")
    p.add_argument("--benchmark", help="a benchmark protocol (segfast protocols lists them): its split, queries, "
                                       "prompt, ignore rule, resolution and metric, printed beside the papers' numbers")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.options.root=/data/ade model.path=...")
    p.set_defaults(func=evaluate_command)
    p = sub.add_parser("protocols", help="the benchmark protocols of segfast evaluate --benchmark, with the papers' "
                                         "numbers (table and row)")
    p.set_defaults(func=protocols_command)
    p = sub.add_parser("cot-cache", help="LLaVASeg: generate and cache the frozen MLLM's chain-of-thought answers "
                                         "for a config's data (resumable; torchrun shards by rank)")
    p.add_argument("--config", required=True, help="YAML file of the LLaVASeg run (model and data)")
    p.add_argument("--splits", nargs="+", default=["train", "eval"], choices=["train", "eval"])
    p.add_argument("--batch-size", type=int, default=8, help="queries per generation batch")
    p.add_argument("--workers", type=int, default=2, help="image-decoding worker processes")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.path=/weights/llava-1.5-7b-hf")
    p.set_defaults(func=cot_cache_command)
    p = sub.add_parser("export", help="merge LoRA and save a plain transformers model directory")
    p.add_argument("--checkpoint", required=True, help="a checkpoints/step-* directory")
    p.add_argument("--out", required=True)
    p.set_defaults(func=export_command)
    p = sub.add_parser("llafs-eval", help="few-shot mean foreground IoU of an LLaFS checkpoint on one fold")
    p.add_argument("--checkpoint", required=True, help="a checkpoints/step-* directory")
    p.add_argument("--root", required=True, help="PASCAL-5i or COCO-20i root (see segfast.data.fewshot)")
    p.add_argument("--dataset", default="pascal", choices=["pascal", "coco"])
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--attributes", help="JSON of per-class region attributes")
    p.set_defaults(func=llafs_eval)
    p = sub.add_parser("proposals", help="SAM everything-mode proposals for an image folder (resumable; torchrun "
                                         "shards by rank)")
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="one JSON per image is written here")
    p.add_argument("--checkpoint", help="SAM checkpoint (e.g. sam_vit_h_4b8939.pth); omitted = random weights")
    p.add_argument("--model-type", default="vit_h", help="vit_h, vit_l, vit_b or tiny")
    p.add_argument("--top-k", type=int, default=100, help="keep the k largest proposals per image")
    p.add_argument("--device", default="auto", choices=["auto", "cpu"])
    p.add_argument("--workers", type=int, default=2, help="image-decoding worker processes")
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--points-per-batch", type=int, default=64)
    p.add_argument("--pred-iou-thresh", type=float, default=0.88)
    p.add_argument("--stability-score-thresh", type=float, default=0.95)
    p.add_argument("--box-nms-thresh", type=float, default=0.7)
    p.add_argument("--crop-n-layers", type=int, default=0)
    p.add_argument("--min-mask-region-area", type=int, default=0)
    p.add_argument("--image-batch", type=int, default=1, help="images per image-encoder call")
    p.set_defaults(func=proposals_command)

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
