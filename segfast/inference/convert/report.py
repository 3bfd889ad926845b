"""What a conversion did with every key: mapped (source -> target, shape), unused (in the
release, read by nothing) and missing (needed, found nowhere)."""

import json
from dataclasses import dataclass, field
from pathlib import Path

REPORT = "conversion.json"


class ConversionError(ValueError):
    """The release lacks weights the model needs (or they do not fit); names them."""


@dataclass
class Report:
    system: str
    source: str
    mapped: list = field(default_factory=list)  # [source key, target, shape]
    unused: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def map(self, source_key: str, target: str, tensor) -> None:
        self.mapped.append([source_key, target, list(tensor.shape)])

    def summary(self) -> str:
        lines = [
            f"{self.system} from {self.source}: {len(self.mapped)} keys mapped, {len(self.unused)} unused, "
            f"{len(self.missing)} missing"
        ]
        for what, keys in (("unused", self.unused), ("missing", self.missing)):
            lines += [f"  {what}: {k}" for k in keys[:20]]
            lines += [f"  ... {len(keys) - 20} more"] if len(keys) > 20 else []
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def write(self, directory) -> Path:
        path = Path(directory) / REPORT
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.__dict__, indent=1))
        return path

    def fit(self, weights: dict, own: dict, what: str, name=str) -> None:
        """Records the names of `own` (the model's state, shapes) that `weights` lacks as missing
        (as name(key) gives them), refuses tensors of another shape, then check()."""
        self.missing += sorted(name(k) for k in set(own) - set(weights))
        wrong = [
            f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in weights.items() if v.shape != own[k].shape
        ]
        if wrong:
            raise ConversionError(f"weights that do not fit {what}: {', '.join(wrong[:10])}")
        self.check()

    def check(self) -> None:
        if self.missing:
            raise ConversionError(
                f"{self.source} lacks {len(self.missing)} weight(s) the {self.system} model needs: "
                + ", ".join(self.missing[:10])
                + (" ..." if len(self.missing) > 10 else "")
            )
