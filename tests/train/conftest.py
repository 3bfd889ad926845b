import pytest
import torch


def write_tiny_llm(directory, vocab_words=60):
    """A random-init tiny Llama and a word-level tokenizer saved like a real checkpoint, so
    tests go through the real loading path (AutoTokenizer / AutoModelForCausalLM)."""
    from segfast.models.tiny import tiny_llama, word_tokenizer

    # "[SEG]" is in the vocabulary, yet text splits it
    words = [f"w{i}" for i in range(vocab_words)] + ["[", "]", "SEG", "[SEG]", "(", ")", ","]
    tokenizer = word_tokenizer(words)
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(0)
    tiny_llama(vocab_size=len(tokenizer)).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory):
    return write_tiny_llm(tmp_path_factory.mktemp("tiny-llama"))
