"""Dynamic batching around ``model.generate``, with per-request streaming inside a batch.

Requests wait in a bounded queue. A worker thread (never the event loop) takes the
oldest request, gathers up to ``max_batch_size - 1`` more with the same sampling
parameters for at most ``max_wait_ms``, left-pads them and runs one ``generate``.
A stopping criterion sees every step's tokens for the whole batch: it hands each row's
text to its request as it is made, and tells ``generate`` which rows are finished (their
own token limit, a stop string, end of sequence, or a client that went away).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

log = logging.getLogger("inference_server.engine")


class QueueFullError(Exception):
    """The request queue is at its bound; retry later."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        # Below this, logits / temperature overflow to inf and sampling becomes argmax anyway.
        return self.temperature < 1e-5


@dataclass
class Generation:
    """One request's life in the engine. ``events`` is read on the event loop."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...]
    loop: asyncio.AbstractEventLoop
    stream: bool = True  # False: the text is decoded once, at the end
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued_at: float = field(default_factory=time.monotonic)
    # Worker-thread state
    tokens: list[int] = field(default_factory=list)
    emitted: str = ""
    finished: bool = False
    first_token_at: float | None = None

    def emit(self, kind: str, *payload: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, *payload))


@dataclass(frozen=True)
class EngineLimits:
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 64


def _stop_cut(text: str, stops: tuple[str, ...]) -> tuple[int | None, int]:
    """(index where the first complete stop string starts, or None; length of the held tail).

    The tail is the longest suffix of ``text`` that could still grow into a stop string:
    it is not sent until the next tokens show whether it does.
    """
    cut = None
    for stop in stops:
        index = text.find(stop)
        if index != -1 and (cut is None or index < cut):
            cut = index
    if cut is not None:
        return cut, 0
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                held = max(held, size)
                break
    return None, held


class _RowTracker(StoppingCriteria):
    """The per-step hook of ``generate``: sees each row's newest token, streams its text,
    and answers which rows are finished.

    transformers evaluates stopping criteria right after appending a step's tokens and
    before the next step, so a row that ends (its own limit, a stop string, end of
    sequence, a cancelled request) costs no further step, and text reaches the client
    as soon as it exists. A streamer would see the tokens one call later.
    """

    def __init__(self, engine: BatchingEngine, batch: list[Generation]) -> None:
        self.engine = engine
        self.batch = batch

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        for row, token in zip(self.batch, input_ids[:, -1].tolist()):
            if row.finished:
                continue
            if row.cancelled.is_set():
                self.engine.finish(row, "cancelled")
                continue
            if token == self.engine.eos_token_id:
                self.engine.finish(row, "stop")
                continue
            row.tokens.append(token)
            if row.first_token_at is None:
                row.first_token_at = now
                self.engine.observe_first_token(row)
            if row.stream or row.stop:  # only they need the text before the end
                self.engine.advance(row)
            if not row.finished and len(row.tokens) >= row.max_new_tokens:
                self.engine.finish(row, "length")
        return torch.tensor([row.finished for row in self.batch], device=input_ids.device)


class BatchingEngine:
    """Owns the model; everything that touches it runs on the worker thread."""

    def __init__(self, model: Any, tokenizer: Any, limits: EngineLimits, metrics: Any = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.limits = limits
        self.metrics = metrics
        self.eos_token_id = tokenizer.eos_token_id
        tokenizer.padding_side = "left"  # decoder-only: pad on the left so every row ends at "now"
        self._queue: queue.Queue[Generation] = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._deferred: deque[Generation] = deque()
        self._last_batch_size = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-engine", daemon=True)

    # -- lifecycle (event loop side) ---------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        return self._pending

    def submit(self, generation: Generation) -> None:
        with self._pending_lock:
            if self._pending >= self.limits.max_queue:
                raise QueueFullError(f"{self._pending} requests are queued (limit {self.limits.max_queue})")
            self._pending += 1
        self._set_queue_gauge()
        self._queue.put(generation)

    # -- worker thread -----------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stopping.is_set():
                batch = self._next_batch()
                if not batch:
                    continue
                try:
                    self._generate(batch)
                except Exception as exc:  # noqa: BLE001 - every request must hear about it
                    log.exception("generation failed for a batch of %d", len(batch))
                    for row in batch:
                        if not row.finished:
                            row.finished = True
                            row.emit("error", f"generation failed: {type(exc).__name__}")

    def _take(self, timeout: float) -> Generation | None:
        """The oldest waiting request (deferred ones first); wait up to ``timeout`` s, or not at all if <= 0."""
        if self._deferred:
            return self._deferred.popleft()
        try:
            return self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _next_batch(self) -> list[Generation]:
        first = self._take(timeout=0.1)
        if first is None:
            return []
        batch = [first]
        # Wait for companions only under load (the last batch had several requests): a lone
        # request on an idle server starts at once, and under load requests that arrive
        # while a batch runs are already queued for the next one.
        wait_s = self.limits.max_wait_ms / 1000 if self._last_batch_size > 1 else 0.0
        deadline = first.enqueued_at + wait_s
        held: list[Generation] = []
        while len(batch) < self.limits.max_batch_size:
            remaining = deadline - time.monotonic()
            candidate = self._take(timeout=remaining)
            if candidate is None:
                break
            if candidate.sampling == first.sampling:
                batch.append(candidate)
            else:
                held.append(candidate)  # other sampling parameters: next batch, order kept
        self._deferred.extendleft(reversed(held))
        self._last_batch_size = len(batch)
        live = []
        for row in batch:
            self._dequeued()
            if row.cancelled.is_set():
                row.finished = True
                row.emit("done", "cancelled", len(row.prompt_ids), 0)
            else:
                live.append(row)
        return live

    def _dequeued(self) -> None:
        with self._pending_lock:
            self._pending -= 1
        self._set_queue_gauge()

    def _generate(self, batch: list[Generation]) -> None:
        encoded = self.tokenizer.pad(
            {"input_ids": [row.prompt_ids for row in batch]}, padding=True, return_tensors="pt"
        )
        device = self.model.device
        sampling = batch[0].sampling
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(batch))
        self.model.generate(
            input_ids=encoded["input_ids"].to(device),
            attention_mask=encoded["attention_mask"].to(device),
            max_new_tokens=max(row.max_new_tokens for row in batch),
            do_sample=not sampling.greedy,
            temperature=sampling.temperature if not sampling.greedy else None,
            top_p=sampling.top_p if not sampling.greedy else None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_token_id,
            stopping_criteria=StoppingCriteriaList([_RowTracker(self, batch)]),
        )
        for row in batch:  # generate() stopped at the longest limit: close the rest
            self.finish(row, "length")

    # -- per-row text (worker thread) ----------------------------------------------------

    def advance(self, row: Generation) -> None:
        """Send the new text of ``row``, holding back what may be a stop string or half a character."""
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        cut, held = _stop_cut(text, row.stop)
        if cut is not None:
            self._send(row, text[:cut])
            self.finish(row, "stop")
            return
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next bytes
            held = max(held, 1)
        self._send(row, text[: len(text) - held])

    def _send(self, row: Generation, text: str) -> None:
        # Decoding a longer token list extends the earlier text, so the new part is the tail.
        if len(text) > len(row.emitted):
            row.emit("text", text[len(row.emitted):])
            row.emitted = text

    def finish(self, row: Generation, reason: str) -> None:
        """Flush what was held back (up to any stop string) and close the request."""
        if row.finished:
            return
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        cut, _ = _stop_cut(text, row.stop)
        self._send(row, text if cut is None else text[:cut])
        row.finished = True
        if self.metrics is not None:
            self.metrics.tokens_out.inc(len(row.tokens))
        row.emit("done", reason, len(row.prompt_ids), len(row.tokens))

    def observe_first_token(self, row: Generation) -> None:
        if self.metrics is not None and row.first_token_at is not None:
            self.metrics.time_to_first_token.observe(row.first_token_at - row.enqueued_at)

    def _set_queue_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self._pending)
