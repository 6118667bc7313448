"""Concurrent chat requests on one model answered as one batch.

A single request on a CPU spends almost all its time reading the weights once per token, so
answering 16 waiting requests together costs little more than answering one (SmolLM2-135M, one
thread, 20 questions x 48 tokens: 66 s one after the other, 10 s as one batch). The scheduler is
one thread per model: it takes the oldest waiting request, every other waiting request for the
same adapter (up to ``max_batch``), left-pads their prompts, and decodes them together, each row
with its own sampling, stop strings, token limit and text stream; a row that finishes leaves the
batch. Requests that arrive while a batch runs wait for the next one (static batching: the batch
is fixed when it starts), as they waited on the model's lock before.

A lone request runs exactly as it did unbatched (no padding, no attention mask), so its answer
does not depend on whether others were waiting when it arrived except through float rounding of
the padded batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudtune import timescale

DEFAULT_MAX_BATCH = 16
# How long the scheduler waits, once woken by a request, for the others a concurrent client is
# sending at the same moment: a few milliseconds against seconds of generation.
GATHER_WINDOW_S = 0.02


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class _Finished:
    completion: Completion


@dataclass
class _Failed:
    error: BaseException


@dataclass
class GenerationRequest:
    ids: list[int]
    adapter: str | None
    limit: int  # tokens it may generate
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # str pieces, then _Finished/_Failed
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: int = 0  # tokens decoded so far (a cancelled request stops counting)

    @property
    def sampled(self) -> bool:
        return self.temperature is not None and self.temperature > 0


class TextStream:
    """One answer's tokens -> text pieces: stop strings cut the text (and may not be split across
    pieces), trailing whitespace and partial UTF-8 characters wait for what follows them, so the
    streamed pieces join to exactly the plain answer."""

    def __init__(self, tokenizer, stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.tokens: list[int] = []
        self.emitted = ""

    def add(self, token: int) -> tuple[str, bool]:
        """The piece ``token`` makes ready, and whether a stop string ended the answer."""
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True).lstrip()
        cut = min((text.find(s) for s in self.stop if s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
        ready = (safe_prefix(text, self.stop) if cut < 0 else text).rstrip()
        return self._emit(ready), cut >= 0

    def rest(self) -> str:
        """What was held back (a possible stop prefix that never completed) when the answer ends."""
        return self._emit(self.tokenizer.decode(self.tokens, skip_special_tokens=True).strip())

    def _emit(self, ready: str) -> str:
        if len(ready) <= len(self.emitted):
            return ""
        piece, self.emitted = ready[len(self.emitted) :], ready
        return piece


def safe_prefix(text: str, stop: Sequence[str]) -> str:
    """``text`` minus a trailing partial UTF-8 character and any tail that may begin a stop string."""
    text = text.rstrip("\ufffd")
    hold = 0
    for marker in stop:
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:size]):
                hold = max(hold, size)
                break
    return text[: len(text) - hold] if hold else text


def pick_token(logits, temperature: float, top_p: float, rng) -> int:
    import torch

    probs = torch.softmax(logits / float(temperature), dim=-1)
    if top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(ordered, dim=-1) - ordered < top_p  # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=rng))


def cache_of(output) -> dict[str, Any]:
    """The key/value cache to pass back: transformers 5 calls it ``cache`` (``past_key_values`` before)."""
    if getattr(output, "cache", None) is not None:
        return {"cache": output.cache}
    return {"past_key_values": output.past_key_values}


class _Row:
    """One request's place in a running batch."""

    def __init__(self, request: GenerationRequest, tokenizer, device: str) -> None:
        import torch

        self.request = request
        self.text = TextStream(tokenizer, request.stop)
        self.rng = None
        if request.sampled:
            self.rng = torch.Generator(device=device)
            self.rng.manual_seed(int(request.seed) if request.seed is not None else int(time.time_ns() % 2**63))

    def finish(self, reason: str) -> None:
        rest = self.text.rest() if reason == "length" else ""
        if rest:
            self.request.out.put(rest)
        self.request.out.put(_Finished(Completion(self.text.emitted.strip(), reason, len(self.request.ids),
                                                  len(self.text.tokens))))


def decode_batch(model, requests: list[GenerationRequest], *, tokenizer, device: str, stops: set[int],
                 pad_id: int) -> None:
    """Generate every request's answer in one batch, streaming each row's pieces to its queue."""
    import torch

    rows = [_Row(r, tokenizer, device) for r in requests]
    longest = max(len(r.ids) for r in requests)
    padded = len(requests) > 1 and any(len(r.ids) != longest for r in requests)
    inputs = torch.tensor([[pad_id] * (longest - len(r.ids)) + r.ids for r in requests], device=device)
    mask = positions = None
    if padded:
        mask = torch.tensor([[0] * (longest - len(r.ids)) + [1] * len(r.ids) for r in requests], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
    output = model(input_ids=inputs, use_cache=True, **_padding(mask, positions))
    while rows:
        logits = output.logits[:, -1].float()
        staying, tokens = [], []
        for index, row in enumerate(rows):
            request = row.request
            if request.cancelled.is_set():
                continue  # its reader went away: nobody waits for an answer
            token = (pick_token(logits[index], request.temperature, request.top_p, row.rng) if request.sampled
                     else int(torch.argmax(logits[index])))
            request.generated += 1
            if token in stops:
                row.finish("stop")
                continue
            piece, stopped = row.text.add(token)
            if piece:
                request.out.put(piece)
            if stopped:
                row.finish("stop")
            elif len(row.text.tokens) >= request.limit:
                row.finish("length")
            else:
                staying.append(index)
                tokens.append(token)
        if not staying:
            return
        cache = cache_of(output)
        if len(staying) < len(rows):
            keep = torch.tensor(staying, device=device)
            _select_rows(cache, keep)
            mask = mask[keep] if mask is not None else None
            positions = positions[keep] if positions is not None else None
            rows = [rows[i] for i in staying]
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            positions = positions[:, -1:] + 1
        step = torch.tensor(tokens, device=device).view(-1, 1)
        output = model(input_ids=step, use_cache=True, **_padding(mask, positions), **cache)


def _padding(mask, positions) -> dict[str, Any]:
    return {} if mask is None else {"attention_mask": mask, "position_ids": positions}


def _select_rows(cache: dict[str, Any], keep) -> None:
    (value,) = cache.values()
    value.batch_select_indices(keep)  # transformers' Cache (DynamicCache and the rest) keeps those rows


class BatchScheduler:
    """The one thread that runs a model's generations, batch after batch."""

    def __init__(self, run_batch: Callable[[list[GenerationRequest]], None], *, max_batch: int = DEFAULT_MAX_BATCH,
                 name: str = "generation") -> None:
        self._run_batch = run_batch
        self.max_batch = max(1, max_batch)
        self._waiting: list[GenerationRequest] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._name = name
        self.batch_sizes: list[int] = []  # what ran, for tests and the benchmark

    @property
    def waiting(self) -> int:
        """Requests queued for a later batch."""
        with self._wake:
            return len(self._waiting)

    def submit(self, request: GenerationRequest) -> None:
        with self._wake:
            self._waiting.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._wake.notify()

    def _next_batch(self) -> list[GenerationRequest]:
        with self._wake:
            while not self._waiting:
                self._wake.wait()
        timescale.sleep(GATHER_WINDOW_S)
        with self._wake:
            self._waiting = [r for r in self._waiting if not r.cancelled.is_set()]
            if not self._waiting:
                return []
            adapter = self._waiting[0].adapter
            batch = [r for r in self._waiting if r.adapter == adapter][: self.max_batch]
            self._waiting = [r for r in self._waiting if not any(r is b for b in batch)]
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                continue
            self.batch_sizes.append(len(batch))
            try:
                self._run_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - each waiting reader gets the error, the thread goes on
                for request in batch:
                    request.out.put(_Failed(exc))


def stream_of(request: GenerationRequest, submit: Callable[[GenerationRequest], None],
              on_done: Callable[[Completion], None]) -> Iterator[str]:
    """The request's pieces as they come; submits it on the first read (an unread generation costs
    nothing), cancels it if the reader stops early."""
    submit(request)
    try:
        while True:
            item = request.out.get()
            if isinstance(item, _Finished):
                on_done(item.completion)
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        request.cancelled.set()  # a no-op once finished; frees the row if the reader left mid-answer
