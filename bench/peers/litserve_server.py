"""Peer: LitServe with dynamic batching (max batch 32, 10 ms timeout), left-padded generate.

    python litserve_server.py MODEL_DIR PORT
"""

import sys

import litserve as ls
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


class CompletionAPI(ls.LitAPI):
    def setup(self, device):
        self.tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()

    def decode_request(self, request):
        return request["prompt"], int(request.get("max_tokens", 16))

    def batch(self, inputs):
        return inputs

    def predict(self, batch):
        prompts = [p for p, _ in batch]
        max_new = max(n for _, n in batch)
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = self.model.generate(**encoded, max_new_tokens=max_new, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = out[:, encoded["input_ids"].shape[1]:]
        return [(self.tokenizer.decode(row, skip_special_tokens=True), n) for row, (_, n) in zip(new, batch)]

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        text, n = output
        return {"choices": [{"text": text}], "usage": {"completion_tokens": n}}


if __name__ == "__main__":
    server = ls.LitServer(CompletionAPI(max_batch_size=32, batch_timeout=0.01), accelerator="cpu",
                          workers_per_device=1)
    server.run(port=int(sys.argv[2]), generate_client_file=False)
