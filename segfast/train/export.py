"""Export a checkpoint as a plain transformers model directory, LoRA merged into the weights."""

from pathlib import Path

from segfast.train.checkpoint import load_trained


def export(checkpoint_dir, out_dir) -> Path:
    """Rebuilds the model from the checkpoint (load_trained), merges LoRA
    and saves the language model (and tokenizer, when there is one) with save_pretrained."""
    model = load_trained(checkpoint_dir, "cpu")
    out_dir = Path(out_dir)
    lm = model.peft_model.merge_and_unload() if getattr(model, "peft_model", None) is not None else model.lm
    out_dir.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(str(out_dir))
    if getattr(model, "tokenizer", None) is not None:
        model.tokenizer.save_pretrained(str(out_dir))
    return out_dir
