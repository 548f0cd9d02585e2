"""The embedded demo model: a small random-weight Llama and a tokenizer, built offline.

Deterministic (fixed seed, fixed corpus), written with ``save_pretrained`` and a
manifest, then served through exactly the code path of a real model.
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_ID = "platform/demo-llama-tiny"
DEMO_REVISION = "demo-v1"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = """
The platform serves language models on GPUs in the cloud and in a private data centre.
Requests arrive over HTTPS, are batched together, and tokens stream back as they are made.
Spot capacity is cheap but can be taken away; reserved capacity is the floor that stays.
Models are mirrored close to the cluster, verified by their SHA-256 digests, then loaded.
A healthy server answers quickly, reports what it is doing, and refuses what it cannot do.
""" * 4


def build_demo_model(target: Path, seed: int = 0) -> Path:
    """Write the demo tokenizer, model and manifest into ``target``; return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from inference_server.manifest import write_manifest

    target.mkdir(parents=True, exist_ok=True)
    specials = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    core.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|endoftext|>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(target)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    # Random weights favour lone bytes that are half a UTF-8 character. Zeroing the
    # (tied) embeddings of tokens that do not decode to printable text keeps their
    # logits at 0, so the demo writes words rather than replacement characters.
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        for token_id in range(len(tokenizer)):
            text = tokenizer.decode([token_id])
            if not text.strip() or not text.isprintable() or not text.isascii():
                embeddings[token_id].zero_()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(target, safe_serialization=True)
    write_manifest(target, DEMO_MODEL_ID, DEMO_REVISION)
    return target
