"""The words of the generated data (the built-in defaults and the tests): colour names, scene
vocabulary and the synthetic queries. segfast.data draws the pictures; the tiny tokenizers read
these words."""

COLOUR_NAMES = ("red", "green", "blue", "yellow", "white", "black")
OBJECT_COLOURS = [c for c in COLOUR_NAMES if c not in ("white", "black")]
PART, ON_TOP = "stripe", "on top of"
SCENE_WORDS = [*OBJECT_COLOURS, "box", PART, "on", "top", "of"]
SYNTHETIC_WORDS = ["segment", "the", "box", *COLOUR_NAMES]  # referring's synthetic queries
SYNTHETIC_REASONING = "which part of the picture shows the {name}?"  # seg-queries' reasoning form
