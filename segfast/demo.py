"""The built-in default: train a tiny LLaFS on pseudo support-query pairs, no downloads.

`segfast demo` builds a tiny random-init LLaFS (Llama, BLIP-2 Q-Former, conv encoder,
refinement network) from configs, evaluates it, pretrains it through segfast.train on the pseudo
samples with the paper's curriculum (Supp A.2.3: the colour schedules of Eq. (2)-(3), one vertex
hint less every N_p / 30 steps, and the hidden vertices as the target), evaluates again and draws
what it learned:

    <out>/llafs_predictions.png   support | query with the LLM's polygon | refined mask | truth
    <out>/llafs_curves.png        training losses and evaluation IoU over the steps
    <out>/llafs-run/              the run: metrics.jsonl, checkpoints (segfast.train layout)

The demo's task: the demo runs the first DEMO_SPAN of a curriculum of N_p steps (so the hints
are gone from N_p / 2 on and the rest of its run predicts all 16 vertices) and is evaluated on
held-out pairs at that point of the curriculum, without hints: the query polygon from vision alone.

What differs from the paper's configuration, because a random-init model on a CPU has minutes
and no pretrained weights: everything is tiny and trains (encoder and Q-Former included, 64 x 64
images with 64 coordinate tokens, one per pixel as the paper's 384 at 384), the Q-Former's memory
gets a 2-D position encoding (model.options.memory_position: a random conv net's features carry
little position, a CLIP ResNet's and a ViT's do), and the LLM trains fully (LoRA adapts a
pretrained LLM; this one is random). The similarity prior and the support-mask embedding (ours)
stay off, as in the paper. Every random choice is seeded and the run single-threaded-deterministic,
so the numbers repeat on the same machine.
"""

import json
import time
import warnings
from pathlib import Path

import torch

from segfast import registry

DEMO_SIZE = 64
DEMO_SPAN = 1.0  # the share of the curriculum the demo runs (and the difficulty it is evaluated at)
DEMO_NOISE = 6.0  # the pixel noise's std around each region's colour
DEMO_STEPS, DEMO_BATCH = 600, 8


def demo_options() -> dict:
    return {
        "image_size": DEMO_SIZE,
        "coordinate_bins": DEMO_SIZE,
        "encoder": "tiny",
        "freeze_encoder": False,
        "freeze_qformer": False,
        "qformer": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "cross_attention_frequency": 1,
        },
        "num_query_tokens": 16,
        "memory_position": True,
        "coordinate_init": "sine",
        "refine_dim": 32,
        "refine_queries": 8,
        "ohem_min_kept": 1024,
        "max_objects": 1,
    }


def demo_config(out: Path, steps: int, batch: int, device: str) -> dict:
    return {
        "model": {"name": "llafs", "options": demo_options(), "lora": {"enabled": False}},
        "data": {
            "name": "llafs-pseudo",
            "options": {
                "size": DEMO_SIZE,
                "curriculum_samples": round(steps * batch / DEMO_SPAN),
                "eval_progress": DEMO_SPAN,
                "noise_std": DEMO_NOISE,
            },
        },
        "optim": {"lr": 2e-3, "warmup_steps": 20, "weight_decay": 0.0, "min_lr_ratio": 0.1},
        "run": {
            "output_dir": str(out / "llafs-run"),
            "total_steps": steps,
            "global_batch_size": batch,
            "micro_batch_size": batch,
            "save_every": steps,
            "eval_every": max(1, steps // 4),
            "eval_batches": 2,
            "device": "cpu" if device == "cpu" else "auto",
            "log_every": 1,
        },
    }


def eval_batches(count: int, batch: int):
    from segfast.data import collate
    from segfast.data.llafs_pseudo import PseudoPairs

    data = PseudoPairs(size=DEMO_SIZE, split="eval", eval_progress=DEMO_SPAN, noise_std=DEMO_NOISE)
    return [collate([data.sample(i) for i in range(s, min(count, s + batch))]) for s in range(0, count, batch)]


@torch.no_grad()
def evaluate(model, batches, device) -> tuple[dict, list]:
    """Refined-mask and polygon foreground IoU (gIoU), and the share of answers that parse."""
    from segfast.metrics import IoUMeter

    model.eval()
    refined, polygon, parsed, outputs = IoUMeter(), IoUMeter(), 0, []
    for batch in batches:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out = model.predict(batch)
        refined.update(out["masks"], batch["query_mask"])
        polygon.update(out["polygon_masks"], batch["query_mask"])
        parsed += sum(e is None for e in out["errors"])
        outputs.append(out)
    n = int(refined.state[0, 3])
    return {
        "iou": refined.compute()["gIoU"],
        "polygon_iou": polygon.compute()["gIoU"],
        "parsed": parsed / n,
        "samples": n,
    }, outputs


def run(
    out="demo-out", device: str = "cpu", steps: int | None = None, batch: int = DEMO_BATCH, eval_samples: int = 32
) -> dict:
    with warnings.catch_warnings():
        # expected on a CPU: the masked-attention Triton kernel needs a GPU, and SDPA serves instead
        warnings.filterwarnings("ignore", message=r"segfast\.ops\.masked_attention: the Triton kernel cannot run here")
        return _run(Path(out), device, steps or DEMO_STEPS, batch, eval_samples)


def _run(out: Path, device: str, steps: int, batch: int, eval_samples: int) -> dict:
    from segfast.train import load_config, train
    from segfast.train.checkpoint import load_trained, newest_valid_checkpoint

    cfg = load_config(base=demo_config(out, steps, batch, device))
    run_dir = Path(cfg.run.output_dir)
    if run_dir.exists():  # a fresh run each time: an old run's checkpoints would be resumed or mixed in
        import shutil

        shutil.rmtree(run_dir)
    dev = torch.device("cuda" if device == "cuda" and torch.cuda.is_available() else "cpu")
    if dev.type == "cpu":  # the same numbers on every run: one thread, deterministic kernels
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        batches = eval_batches(eval_samples, batch)
        torch.manual_seed(cfg.run.seed)  # the engine builds the model under the same seed
        before, _ = evaluate(registry.system("llafs").model(cfg.model, dev).to(dev), batches, dev)
        print(
            f"before training: refined-mask IoU {before['iou']:.3f}, LLM polygon IoU {before['polygon_iou']:.3f}, "
            f"answers parsed {before['parsed']:.0%} ({eval_samples} held-out pairs)",
            flush=True,
        )
        started = time.perf_counter()
        result = train(cfg)
        seconds = time.perf_counter() - started
        model = load_trained(newest_valid_checkpoint(run_dir), dev)
        after, outputs = evaluate(model, batches, dev)
    finally:
        torch.use_deterministic_algorithms(False)
        if dev.type == "cpu":
            torch.set_num_threads(threads)
    print(
        f"after {result['step']} steps ({seconds:.0f} s): refined-mask IoU {after['iou']:.3f}, LLM polygon IoU "
        f"{after['polygon_iou']:.3f}, answers parsed {after['parsed']:.0%}"
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    from segfast import viz

    grid = viz.llafs_grid(batches[0], outputs[0], out / "llafs_predictions.png")
    curves = viz.training_curves(records, before, after, out / "llafs_curves.png")
    print(f"wrote {grid} (support | query + LLM polygon | refined mask | ground truth)\nwrote {curves}")
    return {
        "before": before,
        "after": after,
        "steps": result["step"],
        "seconds": seconds,
        "grid": grid,
        "curves": curves,
    }
