"""LLaVASeg: chain-of-thought prompting of a frozen MLLM and language-aware SAM adapters."""
