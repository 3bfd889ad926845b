"""LLM-Seg: [SEG]-token selection among SAM everything-mode proposals."""
