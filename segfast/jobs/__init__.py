"""Offline jobs, each with its CLI subcommand (segfast.registry.Job): SAM proposals for LLM-Seg
(proposals.py), LLaVASeg's chain-of-thought cache (cot_cache.py), LLaFS's few-shot evaluation
(fewshot_eval.py). They sit above data, models and train, and register themselves."""
