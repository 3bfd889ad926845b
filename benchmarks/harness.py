"""Shared benchmark harness: timing, one result row per (op, contender, case, device), CSV
output and a plain-text table with ratios measured in the same run."""

import argparse
import csv
import platform
import sys
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
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
        self.meta = {"device": device_name(device), "torch": torch.__version__, "commit": git_commit(),
                     "date": time.strftime("%Y-%m-%d")}

    def add(self, contender, case, ms, note="", **extra):
        self.rows.append(Row(self.op, contender, case, self.device, ms, note, extra))

    def table(self, baseline: str) -> str:
        """One line per case and contender, with each contender's time as a multiple of `baseline`'s."""
        lines = [f"{self.op} on {self.meta['device']} (torch {self.meta['torch']}, commit {self.meta['commit']})",
                 f"{'case':<28} {'contender':<30} {'ms':>10} {'x ' + baseline:>22}  note"]
        for case in dict.fromkeys(r.case for r in self.rows):
            rows = [r for r in self.rows if r.case == case]
            base = next((r.ms for r in rows if r.contender == baseline), None)
            for r in rows:
                ratio = f"{r.ms / base:.2f}" if base else "-"
                lines.append(f"{case:<28} {r.contender:<30} {r.ms:>10.2f} {ratio:>22}  {r.note}")
        return "\n".join(lines)

    def write_csv(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted({k for r in self.rows for k in r.extra})
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["op", "contender", "case", "device", "device_name", "torch", "commit", "date", "ms", "note", *keys])
            for r in self.rows:
                w.writerow([r.op, r.contender, r.case, r.device, self.meta["device"], self.meta["torch"],
                            self.meta["commit"], self.meta["date"], f"{r.ms:.4f}", r.note,
                            *[r.extra.get(k, "") for k in keys]])
        return [asdict(r) for r in self.rows]

    def save(self, out_dir: Path, name: str, baseline: str) -> str:
        """Prints the table and writes <name>_<device>.csv and .txt under out_dir."""
        table = self.table(baseline)
        print(table)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.write_csv(out_dir / f"{name}_{self.device}.csv")
        (out_dir / f"{name}_{self.device}.txt").write_text(table + "\n")
        print(f"\nwrote {out_dir / f'{name}_{self.device}.csv'}", file=sys.stderr)
        return table


def parse_args(doc: str, argv=None) -> argparse.Namespace:
    """The command line every benchmark script shares."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="only the cases the acceptance criteria name")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    return parser.parse_args(argv)
