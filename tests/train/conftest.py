import pytest
import torch


def write_tiny_llm(directory, vocab_words=60):
    """A random-init tiny Llama and a word-level tokenizer saved like a real checkpoint, so
    tests go through the real loading path (AutoTokenizer / AutoModelForCausalLM)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    for i in range(vocab_words):
        vocab[f"w{i}"] = len(vocab)
    for piece in ("[", "]", "SEG", "[SEG]", "(", ")", ","):  # "[SEG]" is in the vocabulary, yet text splits it
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>")
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    LlamaForCausalLM(config).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory):
    return write_tiny_llm(tmp_path_factory.mktemp("tiny-llama"))
