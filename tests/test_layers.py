"""The package's layers: a module imports only from its own unit or from layers below it (imports
inside functions included). The order is the one README.md's layout section gives."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# lowest first; units in one layer are peers that must not import each other
LAYERS = [
    ("segfast._C", "segfast.registry", "segfast.io"),
    ("segfast._extension", "segfast.config"),
    ("segfast.kernels",),
    ("segfast.ops",),
    ("segfast.nn",),
    ("segfast.metrics", "segfast.viz"),
    ("segfast.text", "segfast.frames"),
    ("segfast.data", "segfast.models"),
    ("segfast.train",),
    ("segfast.jobs", "segfast.demo", "segfast.inference"),
    ("segfast.serve",),  # the page of `segfast serve`: over a loaded predictor, under cli
    ("segfast.cli",),
    ("segfast.__main__", "segfast"),
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def unit(module: str) -> str:
    """The layer unit a dotted module belongs to (segfast.ops.overlap -> segfast.ops)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and ".".join(parts[:2]) in RANK else parts[0]


def modules():
    """(dotted name, path) of every module of the package, kernels/ installed as segfast.kernels."""
    for base, package in ((ROOT / "segfast", "segfast"), (ROOT / "kernels", "segfast.kernels")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join([package, *parts]), path


def imported(path: Path, module: str) -> set:
    """segfast modules imported anywhere in the file (`from segfast import x` counts segfast.x)."""
    tree = ast.parse(path.read_text())
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {n for n in names if n == "segfast" or n.startswith("segfast.")}


def violations() -> list:
    out = []
    for module, path in modules():
        mine = unit(module)
        assert mine in RANK, f"{module}: its unit {mine} is in no layer of LAYERS"
        for name in imported(path, module):
            theirs = unit(name)
            if theirs == mine or theirs not in RANK or name == "segfast":
                continue  # its own unit; `import segfast` alone names no layer
            if RANK[theirs] >= RANK[mine]:
                out.append(f"{module} imports {name} ({theirs} is not below {mine})")
    return out


def test_every_import_goes_down_the_layers():
    assert violations() == []


def test_an_import_against_the_order_is_caught(tmp_path, monkeypatch):
    """The check itself: a data module importing a model, or ops importing train, is reported."""
    bad = ROOT / "segfast" / "data" / "_layer_probe.py"
    bad.write_text("def f():\n    from segfast.models.lisa.model import LISA\n    from segfast.train import train\n")
    try:
        found = violations()
    finally:
        bad.unlink()
    assert any("segfast.data._layer_probe imports segfast.models.lisa.model" in v for v in found)
    assert any("segfast.data._layer_probe imports segfast.train" in v for v in found)
