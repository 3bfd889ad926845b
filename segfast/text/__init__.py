"""The text side that data and models share: special tokens, each system's question and answer
templates, sequence builders and the tiny tokenizers' vocabularies. It imports no data or model
code, so datasets (which write conversations) and models (which read them) both build on it."""
