"""SegLLM: multi-round segmentation with mask memory on the LISA base."""
