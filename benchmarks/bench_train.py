"""Training-step throughput and MFU: a LLaMA-shaped model (random init, LoRA on q/v, bf16
autocast), sequences of 512 tokens of which 256 stand in for image tokens, with SDPA (or
flash_attention_2 when flash_attn imports) against eager attention, and peak memory with and
without gradient checkpointing.

MFU counts 6 N flops per token for the frozen-base LoRA step as 4 N (forward 2 N, backward
through activations 2 N; frozen weights get no weight gradients) plus attention
(4 * layers * seq * hidden per token forward, doubled for backward), over the GPU's dense bf16
peak (--peak-tflops, default 989 for an H100 SXM).

    python -m benchmarks.bench_train [--quick] [--device cpu|cuda] [--out DIR] [--model 7b|tiny]
"""

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

from benchmarks.harness import Report

GPU_CHECK_SECONDS = 90  # scripts/gpu_check.sh's limit for --quick

SHAPES = {
    "7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    "tiny": dict(
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=1000,
    ),
}


def build(shape: str, attention: str, checkpointing: bool, device):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=1024, attn_implementation=attention)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if device == "cuda" else torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model, cfg


def step_flops(cfg, n_params, tokens, seq):
    attention = 4 * cfg.num_hidden_layers * seq * cfg.hidden_size * tokens
    return 4 * n_params * tokens + 3 * attention  # forward (1x) + backward (2x) for attention


def measure(shape, attention, checkpointing, batch, seq, device, steps):
    model, cfg = build(shape, attention, checkpointing, device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

    def one():
        with ctx:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    one()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    n_params = sum(p.numel() for p in model.parameters())
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    flops = step_flops(cfg, n_params, batch * seq, seq)
    return seconds, batch * seq / seconds, flops / seconds, peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", choices=list(SHAPES), default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    shape = args.model or ("7b" if args.device == "cuda" else "tiny")
    fast = "flash_attention_2" if importlib.util.find_spec("flash_attn") and args.device == "cuda" else "sdpa"
    runs = [(fast, False), ("eager", False), (fast, True)]
    if args.quick:
        args.steps = min(args.steps, 3)
    report = Report("train_step", args.device)
    case = (
        f"{shape} LoRA bf16 batch {args.batch} x seq {args.seq}"
        if args.device == "cuda"
        else f"{shape} LoRA fp32 batch {args.batch} x seq {args.seq}"
    )
    for attention, ckpt in runs:
        label = f"{attention}{' + grad ckpt' if ckpt else ''}"
        print(f"running {label}", file=sys.stderr, flush=True)
        try:
            seconds, tps, flops, peak = measure(shape, attention, ckpt, args.batch, args.seq, args.device, args.steps)
        except torch.cuda.OutOfMemoryError:
            report.add(label, case, float("nan"), "out of memory")
            continue
        finally:
            if args.device == "cuda":
                torch.cuda.empty_cache()  # the previous model is gone once measure() returns
        mfu = flops / (args.peak_tflops * 1e12) if args.device == "cuda" else float("nan")
        report.add(
            label,
            case,
            seconds * 1e3,
            f"{tps:.0f} tokens/s, MFU {mfu:.1%}, peak {peak:.1f} GiB",
            tokens_per_s=f"{tps:.1f}",
            mfu=f"{mfu:.4f}",
            peak_gib=f"{peak:.2f}",
        )
    report.save(args.out, "train", baseline=f"{fast}")
    return report


if __name__ == "__main__":
    main()
