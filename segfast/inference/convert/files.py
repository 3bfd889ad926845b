"""Reading released checkpoints in the formats transformers writes: one model.safetensors or
pytorch_model.bin, or shards (model-00001-of-0000N.safetensors, pytorch_model-00001-of-0000N.bin)
listed by their index JSON (model.safetensors.index.json / pytorch_model.bin.index.json, whose
"weight_map" names each tensor's shard). Tensors are read one at a time, so a 7B checkpoint is
never in memory twice."""

import json
from pathlib import Path

import torch

FORMATS = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)


class Weights:
    """The tensors of a released checkpoint directory: keys(), [key], in."""

    def __init__(self, directory):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"--from: {self.directory} is not a directory")
        self._shards, self.shard_of = {}, None
        for index, single in FORMATS:
            if (self.directory / index).is_file():
                self.shard_of = json.loads((self.directory / index).read_text())["weight_map"]
                break
            if (self.directory / single).is_file():
                self.shard_of = {k: single for k in self._open(single)}
                break
        if self.shard_of is None:
            names = ", ".join(n for pair in FORMATS for n in pair)
            raise FileNotFoundError(f"--from: {self.directory} holds none of {names}")
        missing = sorted({s for s in self.shard_of.values() if not (self.directory / s).is_file()})
        if missing:
            raise FileNotFoundError(f"--from: shard(s) named by the index are missing: {', '.join(missing)}")

    def _open(self, name: str):
        if name not in self._shards:
            path = self.directory / name
            if name.endswith(".safetensors"):
                from safetensors import safe_open

                handle = safe_open(str(path), framework="pt")
                shard = {k: (lambda k=k, h=handle: h.get_tensor(k)) for k in handle.keys()}
            else:  # memory-mapped: a tensor is read when it is used
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                shard = {k: (lambda v=v: v) for k, v in state.items()}
            self._shards[name] = shard
        return self._shards[name]

    def keys(self) -> list:
        return list(self.shard_of)

    def __contains__(self, key: str) -> bool:
        return key in self.shard_of

    def __getitem__(self, key: str) -> torch.Tensor:
        shard = self._open(self.shard_of[key])
        if key not in shard:
            raise KeyError(f"{key}: the index names shard {self.shard_of[key]}, which does not hold it")
        return shard[key]()

    def config(self) -> dict:
        path = self.directory / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"--from: {self.directory} has no config.json (the model's configuration)")
        return json.loads(path.read_text())
