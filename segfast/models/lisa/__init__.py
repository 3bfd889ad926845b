"""LISA and the [SEG]-token family's shared parts (conversations, SAM prompting)."""
