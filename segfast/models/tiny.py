"""Tiny random-init language models for the built-in defaults and tests (no downloads): a small
Llama built from a config and a word-level tokenizer over a given vocabulary, both real
transformers objects, so they go through the same code as a local checkpoint."""

TINY_LLAMA = dict(
    vocab_size=64,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=128,
)


def word_tokenizer(words):
    """A PreTrainedTokenizerFast that splits on whitespace and punctuation and knows `words`
    (plus <pad>, <unk>, <s>, </s>); anything else reads as <unk>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def tiny_llama(**options):
    """A random-init LlamaForCausalLM from TINY_LLAMA updated by `options`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **options}))
