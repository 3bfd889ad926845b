"""A dispatch mode that records what ops ran and how large their outputs were: the evidence for
"no sort" and "no N x C x H x W / B x H x Lq x Lk temporary" claims."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class Allocations(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()
        self.sizes = []        # numel of every tensor output
        self.float_sizes = []  # numel of floating-point outputs

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor):
                self.sizes.append(o.numel())
                if o.is_floating_point():
                    self.float_sizes.append(o.numel())
        return out
