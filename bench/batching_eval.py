"""Which batching core is faster on this device: padded ``generate`` or continuous batching?

Same demo model, same prompts, same token budget, one process:
  - ``generate``: what the engine runs, left-padded static batches of ``--batch`` prompts;
  - ``generate_batch``: transformers' continuous batching (paged cache, requests join and
    leave the running batch), given all prompts at once.
Prints generated tokens/s for each. Run on each device class before choosing the engine.

    python bench/batching_eval.py [--prompts 64] [--batch 8 32] [--max-new-tokens 16]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from inference_server.demo import build_demo_model
from inference_server.loading import cpu_limit, default_torch_threads


def prompts(tokenizer, count: int) -> list[list[int]]:
    words = "spot reserved capacity model mirror batch token stream latency queue".split()
    return [tokenizer(" ".join(words[(i + j) % len(words)] for j in range(4 + i % 12)))["input_ids"] for i in range(count)]


def run_generate(model, tokenizer, inputs, batch: int, max_new_tokens: int) -> float:
    produced = 0
    started = time.perf_counter()
    for start in range(0, len(inputs), batch):
        chunk = inputs[start : start + batch]
        encoded = tokenizer.pad({"input_ids": chunk}, padding=True, return_tensors="pt")
        out = model.generate(**encoded, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        produced += (out.shape[1] - encoded["input_ids"].shape[1]) * len(chunk)
    return produced / (time.perf_counter() - started)


def _greedy(model, tokenizer, inputs, max_new_tokens: int) -> list:
    encoded = tokenizer.pad({"input_ids": inputs}, padding=True, return_tensors="pt")
    out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return list(out[:, encoded["input_ids"].shape[1] :])


def run_generate_batch(model, inputs, max_new_tokens: int) -> float:
    config = GenerationConfig(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                              eos_token_id=-1, pad_token_id=model.generation_config.pad_token_id)  # fmt: skip
    started = time.perf_counter()
    outputs = model.generate_batch(inputs=inputs, generation_config=config, progress_bar=False)
    elapsed = time.perf_counter() - started
    produced = sum(len(o.generated_tokens) for o in outputs.values())
    if produced < len(inputs) * max_new_tokens:
        raise RuntimeError(f"generate_batch produced {produced} of {len(inputs) * max_new_tokens} tokens")
    return produced / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(default_torch_threads(cpu_limit()))
    model_dir = build_demo_model(Path(tempfile.mkdtemp()))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    inputs = prompts(tokenizer, args.prompts)
    print(f"device: cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads); {args.prompts} prompts x "
          f"{args.max_new_tokens} new tokens; best of {args.repeats}\n")  # fmt: skip
    rows = []
    with torch.inference_mode():
        run_generate(model, tokenizer, inputs[:8], 8, 4)  # warm-up
        for batch in args.batch:
            rows.append((f"generate, padded batches of {batch}",
                         max(run_generate(model, tokenizer, inputs, batch, args.max_new_tokens) for _ in range(args.repeats))))  # fmt: skip
        # --quantize-int8: dynamic int8 Linear layers (what the server's flag does), same batches.
        int8 = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        for batch in args.batch:
            rows.append((f"generate int8 (dynamic), batches of {batch}",
                         max(run_generate(int8, tokenizer, inputs, batch, args.max_new_tokens) for _ in range(args.repeats))))  # fmt: skip
        same = sum(
            torch.equal(a, b)
            for a, b in zip(
                _greedy(model, tokenizer, inputs[:16], args.max_new_tokens),
                _greedy(int8, tokenizer, inputs[:16], args.max_new_tokens),
            )
        )
        print(f"int8 vs fp32: {same}/16 greedy continuations identical\n")
    # generate_batch runs its own scheduler thread, outside inference_mode.
    try:
        run_generate_batch(model, inputs[:8], 4)  # warm-up
        rows.append(("generate_batch (continuous batching)",
                     max(run_generate_batch(model, inputs, args.max_new_tokens) for _ in range(args.repeats))))  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - report, don't hide, a path that does not run here
        rows.append((f"generate_batch failed: {type(exc).__name__}: {str(exc)[:80]}", float("nan")))
    best = max(r[1] for r in rows if r[1] == r[1])
    print(f"{'core':45} {'tokens/s':>10} {'vs best':>8}")
    for name, rate in rows:
        print(f"{name:45} {rate:10.0f} {rate / best:8.2f}")


if __name__ == "__main__":
    main()
