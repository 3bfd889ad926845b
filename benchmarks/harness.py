"""Shared benchmark harness: timing, one result row per (op, contender, case, device), CSV
output and a plain-text table with ratios measured in the same run."""

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def measure(fn, device: str, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() in milliseconds. Each call's result is dropped before the next,
    so allocation (page faults on the CPU) is part of every measurement."""
    for _ in range(warmup):
        out = fn()
        del out
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
        del out
    return statistics.median(times)


@dataclass
class Row:
    op: str
    contender: str
    case: str
    device: str
    ms: float
    note: str = ""
    extra: dict = field(default_factory=dict)


class Report:
    def __init__(self, op: str, device: str):
        self.op, self.device, self.rows = op, device, []
        self.meta = {
            "device": device_name(device),
            "torch": torch.__version__,
            "commit": git_commit(),
            "date": time.strftime("%Y-%m-%d"),
        }

    def add(self, contender, case, ms, note="", **extra):
        self.rows.append(Row(self.op, contender, case, self.device, ms, note, extra))

    def add_with_roofline(self, peaks: "Peaks", contender, case, ms, flops=0.0, nbytes=0.0, note="", **extra):
        """add(), with the fraction of the roofline that `ms` reaches (in the note and a column)."""
        self.meta["roofline"] = peaks.label()
        fraction = peaks.time_ms(flops, nbytes) / ms if ms == ms and ms > 0 else float("nan")
        note = f"{fraction * 100:.3g}% of roofline" + (f"; {note}" if note else "")
        self.add(contender, case, ms, note, roofline_frac=f"{fraction:.4f}", **extra)

    def table(self, baseline) -> str:
        """One line per case and contender, with each contender's time as a multiple of `baseline`'s
        (a name, or names tried in order: the first one the case has)."""
        names = (baseline,) if isinstance(baseline, str) else tuple(baseline)
        lines = [
            f"{self.op} on {self.meta['device']} (torch {self.meta['torch']}, commit {self.meta['commit']})"
            + (f"; {self.meta['roofline']}" if "roofline" in self.meta else ""),
            f"{'case':<28} {'contender':<30} {'ms':>10} {'x ' + ' or '.join(names):>22}  note",
        ]
        for case in dict.fromkeys(r.case for r in self.rows):
            rows = [r for r in self.rows if r.case == case]
            base = next((r.ms for name in names for r in rows if r.contender == name), None)
            for r in rows:
                ratio = f"{r.ms / base:.2f}" if base else "-"
                lines.append(f"{case:<28} {r.contender:<30} {r.ms:>10.2f} {ratio:>22}  {r.note}")
        return "\n".join(lines)

    def write_csv(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted({k for r in self.rows for k in r.extra})
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                ["op", "contender", "case", "device", "device_name", "torch", "commit", "date", "ms", "note", *keys]
            )
            for r in self.rows:
                w.writerow(
                    [
                        r.op,
                        r.contender,
                        r.case,
                        r.device,
                        self.meta["device"],
                        self.meta["torch"],
                        self.meta["commit"],
                        self.meta["date"],
                        f"{r.ms:.4f}",
                        r.note,
                        *[r.extra.get(k, "") for k in keys],
                    ]
                )
        return [asdict(r) for r in self.rows]

    def save(self, out_dir: Path, name: str, baseline) -> str:
        """Prints the table and writes <name>_<device>.csv and .txt under out_dir."""
        table = self.table(baseline)
        print(table)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.write_csv(out_dir / f"{name}_{self.device}.csv")
        (out_dir / f"{name}_{self.device}.txt").write_text(table + "\n")
        print(f"\nwrote {out_dir / f'{name}_{self.device}.csv'}", file=sys.stderr)
        return table


def interpret_triton_on_cpu(device: str):
    """Off the GPU, Triton kernels run only under the interpreter: turn it on before any of
    segfast.kernels is imported (triton reads it when a kernel is defined). Correctness, not speed."""
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"


def with_env(fn, **env):
    """fn, run with environment variables set (e.g. TRITON_INTERPRET="0": segfast's backend choice
    then skips the interpreted kernels for this contender)."""

    def run():
        before = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            return fn()
        finally:
            for key, value in before.items():
                if value is None:
                    del os.environ[key]
                else:
                    os.environ[key] = value

    return run


def parse_args(doc: str, argv=None) -> argparse.Namespace:
    """The command line every benchmark script shares."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="only the cases the acceptance criteria name")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    return parser.parse_args(argv)


# ---- roofline --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peaks:
    """What the device can do at best: bytes/s of a device-to-device copy (read + write counted)
    and bf16 matmul FLOP/s; `source` says where the numbers come from."""

    bytes_per_s: float
    flops_per_s: float
    source: str

    def time_ms(self, flops: float = 0.0, nbytes: float = 0.0) -> float:
        """The roofline: the least time the work can take on this device."""
        return max(flops / self.flops_per_s, nbytes / self.bytes_per_s) * 1e3

    def label(self) -> str:
        return (
            f"roofline {self.bytes_per_s / 1e12:.2f} TB/s, {self.flops_per_s / 1e12:.0f} TFLOP/s bf16 ({self.source})"
        )


# measured on the H100 lent to this project (DESIGN.md, "Performance method")
H100 = Peaks(3.0e12, 800e12, "H100 as measured here")
_measured = {}


def peaks(device: str) -> Peaks:
    """The GPU's peaks measured once per process (a 1 GiB copy, an 8192^3 bf16 matmul), so that a
    fraction of the roofline means the same on an H100 or an H200; the H100's off the GPU."""
    if device != "cuda":
        return Peaks(H100.bytes_per_s, H100.flops_per_s, "the H100's; this run is not on a GPU")
    if device not in _measured:
        src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        copy_ms = measure(lambda: dst.copy_(src), "cuda", repeats=10)
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        matmul_ms = measure(lambda: a @ a, "cuda", repeats=10)
        _measured[device] = Peaks(
            2 * src.numel() / (copy_ms / 1e3), 2 * 8192**3 / (matmul_ms / 1e3), f"measured on {device_name(device)}"
        )
        del src, dst, a
    return _measured[device]
