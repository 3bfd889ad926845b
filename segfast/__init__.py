"""segfast: fast, tested kernels and training for LLM-based image segmentation."""

from segfast import metrics, nn, ops
from segfast._extension import build_info
from segfast.train import train

__version__ = "0.1.0"
__all__ = ["ops", "nn", "metrics", "train", "load", "build_info", "__version__"]


def __getattr__(name):
    # lazy: inference pulls in PIL and the systems' runners, which `import segfast` does not need
    if name == "load":
        from segfast.inference import load

        return load
    raise AttributeError(f"module 'segfast' has no attribute {name!r}")
