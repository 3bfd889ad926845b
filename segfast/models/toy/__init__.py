"""toy-llm: the engine's built-in default (a tiny causal LM on token sequences)."""
