"""Tiny, randomly initialised causal LMs and a tiny tokenizer for fast offline tests.

Nothing here touches the network: the tokenizer is trained in-process on a small
built-in corpus, and the models are built from configs with a fixed seed. The
models are far too small to learn anything; they exist so tests can exercise
loading, hooks, attention capture and K/V finetuning on every architecture the
plugin claims to support, in milliseconds.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPTJConfig,
    GPTNeoConfig,
    GPTNeoXConfig,
    LlamaConfig,
    OPTConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    XGLMConfig,
)

# gpt2/gpt_neo/llama/gemma3/qwen2 are the architectures the plugin must support; xglm is the HF
# form of Dai et al.'s own fairseq dense models; gptj/opt/gpt_neox are there so adapters for
# them can be tested too.
ARCHS: tuple[str, ...] = ("gpt2", "gpt_neo", "llama", "gemma3", "qwen2", "xglm", "gptj", "opt", "gpt_neox")

EOS = "<|endoftext|>"
VOCAB_SIZE = 512
MAX_POSITIONS = 256
GPT_NEO_WINDOW = 4  # small so a test can see the local layer ignore early tokens
GEMMA3_WINDOW = 4

# Mirrors the prompt formats of the plugin's tasks so common words and labels
# become few tokens, plus ordinary prose so the merges look like English.
_CORPUS = """\
Review: a gripping story with wonderful acting and a warm heart
Sentiment: positive

Review: the plot was dull and the jokes fell flat
Sentiment: negative

Review: one of the best films of the year, funny and moving
Sentiment: positive

Review: a boring mess that wastes a talented cast
Sentiment: negative

Review: I loved every minute of this charming little movie
Sentiment: positive

Review: painfully slow, badly written and far too long
Sentiment: negative

Text: the team scored twice in the second half to win the match
Topic: sports

Text: add the garlic and onions to the pan and stir until golden
Topic: food

Text: heavy rain and strong winds are expected across the north tonight
Topic: weather

Text: the bank raised interest rates and the market fell sharply
Topic: money

Word: hot
Antonym: cold

Word: big
Antonym: small

Word: happy
Antonym: sad

Word: early
Antonym: late

Word: open
Antonym: closed

Question: What is the capital of France?
Answer: Paris

The quick brown fox jumps over the lazy dog. The dog sleeps in the sun while the
fox runs into the forest. In the morning the farmer walks to the market to sell
apples, bread and cheese. Children play in the park after school, and their
parents talk about the weather, the news and the price of food.

Language models learn to predict the next word in a sentence. When they see a few
examples in the prompt, they can often continue the pattern without any change to
their weights. This is called in-context learning. Finetuning instead changes the
weights with gradient descent on the same examples. A good test compares the two
on the same queries and reports how often they agree.

positive negative neutral true false yes no A B C D sports food weather money
one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9
"""


@functools.lru_cache(maxsize=1)
def _train_tokenizer_json() -> str:
    # The BPE trainer is deterministic for a fixed corpus (checked across processes
    # with different PYTHONHASHSEEDs); caching the JSON makes repeat calls free.
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any text encodes
        show_progress=False,
    )
    # Repeat the corpus so frequent pairs dominate the merge order decisively.
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return tok.to_str()


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer (GPT-2 style) with BOS = EOS = PAD = <|endoftext|>.

    A fresh wrapper is returned each time so a test that mutates it (e.g. padding
    side) cannot leak into another test; the trained vocabulary is cached.
    """
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_train_tokenizer_json()),
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=None,
        model_max_length=MAX_POSITIONS,
    )


def _config(arch: str, vocab_size: int, eos_id: int):
    common = dict(vocab_size=vocab_size, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    if arch == "gpt2":
        return GPT2Config(
            n_layer=2,
            n_head=4,
            n_embd=32,
            n_positions=MAX_POSITIONS,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            summary_first_dropout=0.0,
            **common,
        )
    if arch == "gpt_neo":
        # One global then one local layer: GPT-Neo alternates them in the real models.
        return GPTNeoConfig(
            num_layers=2,
            num_heads=4,
            hidden_size=32,
            attention_types=[[["global", "local"], 1]],
            window_size=GPT_NEO_WINDOW,
            max_position_embeddings=MAX_POSITIONS,
            resid_dropout=0.0,
            embed_dropout=0.0,
            attention_dropout=0.0,
            classifier_dropout=0.0,
            **common,
        )
    if arch == "llama":
        return LlamaConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            hidden_size=32,
            intermediate_size=64,
            max_position_embeddings=MAX_POSITIONS,
            attention_dropout=0.0,
            **common,
        )
    if arch == "gemma3":
        # Like Gemma 3: local (sliding) layers plus a global one, q/k norms, MQA/GQA.
        return Gemma3TextConfig(
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=1,
            hidden_size=32,
            head_dim=16,
            query_pre_attn_scalar=16,
            intermediate_size=64,
            sliding_window=GEMMA3_WINDOW,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            max_position_embeddings=MAX_POSITIONS,
            attention_dropout=0.0,
            **common,
        )
    if arch == "qwen2":
        return Qwen2Config(
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            hidden_size=32,
            intermediate_size=64,
            max_position_embeddings=MAX_POSITIONS,
            attention_dropout=0.0,
            **common,
        )
    if arch == "gptj":
        return GPTJConfig(
            n_layer=2,
            n_head=4,
            n_embd=32,
            rotary_dim=4,
            n_positions=MAX_POSITIONS,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    if arch == "opt":
        return OPTConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            hidden_size=32,
            ffn_dim=64,
            word_embed_proj_dim=32,
            max_position_embeddings=MAX_POSITIONS,
            dropout=0.0,
            attention_dropout=0.0,
            layerdrop=0.0,
            **common,
        )
    if arch == "gpt_neox":
        return GPTNeoXConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            hidden_size=32,
            intermediate_size=64,
            max_position_embeddings=MAX_POSITIONS,
            attention_dropout=0.0,
            hidden_dropout=0.0,
            classifier_dropout=0.0,
            **common,
        )
    if arch == "xglm":
        # Attention computed inline in forward (no registry, no _attn): the "hooks" capture.
        return XGLMConfig(
            num_layers=2,
            attention_heads=4,
            d_model=32,
            ffn_dim=64,
            max_position_embeddings=MAX_POSITIONS,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            layerdrop=0.0,
            **common,
        )
    raise ValueError(f"unknown tiny arch {arch!r}; choose one of {', '.join(ARCHS)}")


def make_tiny_model(arch: str, *, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A randomly initialised float32 model in eval mode with eager attention."""
    tokenizer = make_tokenizer()
    config = _config(arch, len(tokenizer), tokenizer.eos_token_id)
    torch.manual_seed(seed)  # weights come from the global RNG during init
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    return model, tokenizer


def save_tiny_model(arch: str, folder: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny model + tokenizer as a local folder the plugin can load by path."""
    folder = Path(folder)
    model, tokenizer = make_tiny_model(arch, seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
