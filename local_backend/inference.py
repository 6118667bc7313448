"""A loaded base model serving any number of LoRA adapters side by side, and token-by-token
chat generation. Used by the chat server and by the quickstart's comparisons.

The base weights are held once; each adapter is a PEFT adapter on top of them, selected
per request (``adapter=None`` serves the plain base). Adapters are never merged: merging
would bake one adapter into the shared base. Generation is serialised by one lock (one
model, one batch at a time): requests that wait together are answered together as one batch
(``local_backend/batching.py``); none is dropped.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from local_backend.batching import (
    DEFAULT_MAX_BATCH,
    BatchScheduler,
    Completion,
    GenerationRequest,
    decode_batch,
    stream_of,
)
from local_backend.chat_format import ensure_chat_template, prompt_ids, stop_token_ids
from local_backend.sources import load_model, load_tokenizer, resolve_source

DEFAULT_ADAPTER = "default"
# Without max_tokens a request may use the rest of the context, but a model that never says
# its end-of-turn token would then hold the (single) model for minutes on a CPU: cap it.
DEFAULT_MAX_TOKENS = 1024


class ContextOverflow(ValueError):
    """The prompt (plus the requested completion) does not fit the model's context."""


class Generation:
    """Iterate for text pieces as they are generated; ``result`` is set once iteration ends.
    Closing it early (a client that went away) stops generating its answer."""

    def __init__(self, request: GenerationRequest, submit) -> None:
        self.result: Completion | None = None
        self.request = request
        self._pieces = stream_of(request, submit, self._finished)

    def _finished(self, completion: Completion) -> None:
        self.result = completion

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def close(self) -> None:
        self._pieces.close()


def _tensor_bytes(parameters) -> int:
    return sum(p.numel() * p.element_size() for p in parameters)


def _adapter_of(parameter_name: str) -> str | None:
    """``...q_proj.lora_A.<adapter>.weight`` -> ``<adapter>``; None for a base weight."""
    for marker in (".lora_A.", ".lora_B.", ".lora_embedding_A.", ".lora_embedding_B.", ".lora_magnitude_vector."):
        if marker in parameter_name:
            return parameter_name.split(marker, 1)[1].split(".", 1)[0]
    return None


class ChatModel:
    def __init__(self, base_model: str, adapter_dir: Path | None = None, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        source = resolve_source(base_model)
        self.tokenizer = load_tokenizer(source)
        ensure_chat_template(self.tokenizer)
        # Serve unquantised (bf16 on CUDA, fp32 on CPU); adapters sit on top of the full-precision base.
        self.model = load_model(source, dtype=torch.bfloat16 if self.device == "cuda" else torch.float32).to(self.device).eval()
        self.base_bytes = _tensor_bytes(self.model.parameters())
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)
        self.stops = stop_token_ids(self.tokenizer)
        self._lock = threading.Lock()  # a batch, or an adapter being added or removed
        self.scheduler = BatchScheduler(self._run_batch, max_batch=max_batch)
        self.adapter_bytes: dict[str, int] = {}
        self.default_adapter: str | None = None
        if adapter_dir is not None:
            self.add_adapter(DEFAULT_ADAPTER, Path(adapter_dir))
            self.default_adapter = DEFAULT_ADAPTER

    # ----------------------------------------------------------------- adapters
    def add_adapter(self, name: str, adapter_dir: Path) -> None:
        with self._lock:
            if name in self.adapter_bytes:
                return
            from peft import PeftModel

            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(adapter_dir), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(adapter_dir), adapter_name=name)
            self.model.to(self.device).eval()
            self._recount()

    def remove_adapter(self, name: str) -> None:
        with self._lock:
            if name not in self.adapter_bytes:
                return
            self.model.delete_adapter(name)
            self._recount()

    def _recount(self) -> None:
        sizes: dict[str, int] = {}
        for parameter_name, parameter in self.model.named_parameters():
            adapter = _adapter_of(parameter_name)
            if adapter is not None:
                sizes[adapter] = sizes.get(adapter, 0) + parameter.numel() * parameter.element_size()
        self.adapter_bytes = sizes

    def memory(self) -> dict[str, Any]:
        """Bytes of weights held: the base once, plus each adapter."""
        adapters = dict(self.adapter_bytes)
        return {"base_bytes": self.base_bytes, "adapter_bytes": adapters, "weights_bytes": self.base_bytes + sum(adapters.values())}

    @contextlib.contextmanager
    def _selected(self, adapter: str | None):
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            if adapter is not None:
                raise KeyError(adapter)
            yield self.model
            return
        if adapter is None:
            with self.model.disable_adapter():
                yield self.model
            return
        if adapter not in self.adapter_bytes:
            raise KeyError(adapter)
        self.model.set_adapter(adapter)
        yield self.model

    # --------------------------------------------------------------- generation
    def prompt_tokens(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        return prompt_ids(self.tokenizer, messages)

    def check_fits(self, prompt_length: int, max_tokens: int | None) -> int:
        """The number of tokens that may be generated; raises ContextOverflow when the request cannot fit."""
        room = self.context_length - prompt_length
        if room <= 0 or (max_tokens is not None and max_tokens > room):
            asked = prompt_length + (max_tokens or 0)
            raise ContextOverflow(
                f"This model's maximum context length is {self.context_length} tokens. However, you requested "
                f"{asked} tokens ({prompt_length} in the messages, {max_tokens or 0} in the completion). "
                "Please reduce the length of the messages or completion."
            )
        return min(room, DEFAULT_MAX_TOKENS) if max_tokens is None else max_tokens

    def generate(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        adapter: str | None = "",
        max_tokens: int | None = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> Generation:
        """Start a generation (checks the context first, so overflow raises here, not mid-stream).
        ``adapter=""`` means this model's default (its only adapter, or the base). It is queued for
        the next batch when first read."""
        ids = self.prompt_tokens(messages)
        limit = self.check_fits(len(ids), max_tokens)
        chosen = self.default_adapter if adapter == "" else adapter
        request = GenerationRequest(ids, chosen, limit, temperature, top_p, seed, [s for s in stop if s])
        return Generation(request, self.scheduler.submit)

    def _run_batch(self, requests: list[GenerationRequest]) -> None:
        import torch

        with self._lock, torch.no_grad(), self._selected(requests[0].adapter) as model:
            decode_batch(model, requests, tokenizer=self.tokenizer, device=self.device, stops=set(self.stops),
                         pad_id=self._pad_id())

    def _pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def complete(self, messages: Sequence[Mapping[str, Any]], **params: Any) -> Completion:
        generation = self.generate(messages, **params)
        for _ in generation:
            pass
        assert generation.result is not None
        return generation.result


def timed_complete(model: ChatModel, messages, **params) -> tuple[Completion, float]:
    started = time.perf_counter()
    result = model.complete(messages, **params)
    return result, time.perf_counter() - started
