"""Peer: the seeds' FastAPI sample — one model.generate per request, no batching.

    python naive_server.py MODEL_DIR PORT
"""

import sys

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, port = sys.argv[1], int(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
app = FastAPI()


class Completion(BaseModel):
    model: str = ""
    prompt: str
    max_tokens: int = 16
    temperature: float = 0.0


@app.get("/readyz")
def ready():
    return {"ready": True}


@app.post("/v1/completions")
def complete(body: Completion):  # a plain def: FastAPI runs it in its thread pool
    inputs = tokenizer(body.prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=body.max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    new = out[0, inputs["input_ids"].shape[1]:]
    return {"choices": [{"text": tokenizer.decode(new, skip_special_tokens=True)}],
            "usage": {"completion_tokens": int(new.shape[0])}}


uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
