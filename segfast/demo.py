"""The built-in default: train a tiny LLaFS on pseudo support-query pairs, no downloads.

`segfast demo` builds a tiny random-init LLaFS (Llama with LoRA, BLIP-2 Q-Former, conv encoder,
refinement network) from configs, evaluates it, trains it through segfast.train on the pseudo
samples with the curriculum, evaluates again and draws what it learned:

    <out>/llafs_predictions.png   support | query with the LLM's polygon | refined mask | truth
    <out>/llafs_curves.png        training losses and evaluation IoU over the steps
    <out>/llafs-run/              the run: metrics.jsonl, checkpoints (segfast.train layout)

The demo runs the whole curriculum once (support background and query foreground colours close
in on the support foreground; vertex hints fade from 15 to none over the first half, as in the
paper) towards a gentler end point than the paper's, (c, d) = (25, 50) instead of (50, 100), so
that a few CPU minutes suffice. It is evaluated on held-out pairs at that end point: no hints,
the query polygon from vision alone.
"""

import json
import time
import warnings
from pathlib import Path

import torch

from segfast import registry

DEMO_CURRICULUM = {"c_end": 25.0, "d_end": 50.0}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def demo_config(out: Path, steps: int, batch: int, device: str) -> dict:
    return {
        "model": {
            "name": "llafs",
            "options": {"num_query_tokens": 16, "freeze_encoder": False},
            "lora": {"r": 32, "alpha": 64, "target_modules": LORA_TARGETS},
        },
        "data": {
            "name": "llafs-pseudo",
            "options": {"size": 64, "curriculum_samples": steps * batch, "curriculum": DEMO_CURRICULUM},
        },
        "optim": {"lr": 2e-3, "warmup_steps": 20},
        "run": {
            "output_dir": str(out / "llafs-run"),
            "total_steps": steps,
            "global_batch_size": batch,
            "micro_batch_size": batch,
            "save_every": steps,
            "eval_every": max(1, steps // 5),
            "eval_batches": 4,
            "device": "cpu" if device == "cpu" else "auto",
            "log_every": 1,
        },
    }


def eval_batches(count: int, batch: int):
    from segfast.data import collate
    from segfast.data.llafs_pseudo import PseudoPairs

    data = PseudoPairs(split="eval", curriculum=DEMO_CURRICULUM)
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


def run(out="demo-out", device: str = "cpu", steps: int = 1000, batch: int = 8, eval_samples: int = 32) -> dict:
    with warnings.catch_warnings():
        # expected on a CPU: the masked-attention Triton kernel needs a GPU, and SDPA serves instead
        warnings.filterwarnings("ignore", message=r"segfast\.ops\.masked_attention: the Triton kernel cannot run here")
        return _run(Path(out), device, steps, batch, eval_samples)


def _run(out: Path, device: str, steps: int, batch: int, eval_samples: int) -> dict:
    from segfast.train import load_config, train
    from segfast.train.checkpoint import load_trained, newest_valid_checkpoint

    cfg = load_config(base=demo_config(out, steps, batch, device))
    run_dir = Path(cfg.run.output_dir)
    if run_dir.exists():  # a fresh run each time: an old run's checkpoints would be resumed or mixed in
        import shutil

        shutil.rmtree(run_dir)
    dev = torch.device("cuda" if device == "cuda" and torch.cuda.is_available() else "cpu")
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
