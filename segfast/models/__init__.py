"""The trainable systems, one folder each (its model, options and spec.py, which registers it
with segfast.registry), and the parts they share: llava.py / llm.py (language models), sam/
(segment-anything), tiny.py (random tiny models for offline runs), protocol.py (what the
engine expects of a model).

MODELS is a view of the registered systems' model builders, name -> builder(cfg.model, device);
`MODELS["mine"] = MyModel` registers a model in one line (no options dataclass, no datasets).
"""

from segfast.registry import Builders

MODELS = Builders()
