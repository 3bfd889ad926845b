"""A dispatch mode that records what ops ran and how large their outputs were: the evidence for
"no sort", "no host sync" and "no N x C x H x W / B x H x Lq x Lk temporary" claims."""

import torch
from torch._library.custom_ops import OPDEFS
from torch.utils._python_dispatch import TorchDispatchMode


class Allocations(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()
        self.sizes = []  # numel of every tensor output
        self.float_sizes = []  # numel of floating-point outputs

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        opdef = OPDEFS.get(func._schema.name)
        if opdef is not None:  # a Python custom op (segfast's): record what its implementation runs
            with self:
                return opdef._init_fn(*args, **(kwargs or {}))
        out = func(*args, **(kwargs or {}))  # (the mode is off in here: a custom op's inner ops are unseen)
        if func._schema.is_mutable:  # in place (the interpreter's copies too): allocates nothing
            return out
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor):
                self.sizes.append(o.numel())
                if o.is_floating_point():
                    self.float_sizes.append(o.numel())
        return out
