"""Loading a model for inference (base, or base + LoRA adapter merged) and generating
one chat completion. Used by the chat server and by the quickstart's comparisons."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_backend.chat_format import ensure_chat_template, prompt_ids, stop_token_ids
from local_backend.sources import load_model, load_tokenizer, resolve_source


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class ChatModel:
    """A loaded model; ``complete`` is serialised because one model serves one request at a time."""

    def __init__(self, base_model: str, adapter_dir: Path | None = None) -> None:
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        source = resolve_source(base_model)
        self.tokenizer = load_tokenizer(source)
        ensure_chat_template(self.tokenizer)
        # Serve unquantised: on CUDA in bf16, on CPU in fp32. The adapter is merged into a
        # freshly loaded full-precision base (merging into 4-bit weights loses the adapter's precision).
        model = load_model(source, dtype=torch.bfloat16 if self.device == "cuda" else torch.float32)
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        self.model = model.to(self.device).eval()
        self.stops = stop_token_ids(self.tokenizer)
        self._lock = threading.Lock()

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> Completion:
        import torch

        ids = prompt_ids(self.tokenizer, messages)
        inputs = torch.tensor([ids], device=self.device)
        sample = temperature is not None and temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(1, int(max_tokens)),
            "do_sample": sample,
            "eos_token_id": self.stops,
            "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stops[0],
        }
        if sample:
            kwargs.update(temperature=float(temperature), top_p=float(top_p))
        with self._lock, torch.no_grad():
            if seed is not None:
                torch.manual_seed(int(seed))
            output = self.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), **kwargs)
        new = output[0][len(ids) :].tolist()
        finish = "length"
        if new and new[-1] in self.stops:
            new, finish = new[:-1], "stop"
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        for marker in stop or ():
            if marker and marker in text:
                text, finish = text.split(marker, 1)[0], "stop"
        return Completion(text.strip(), finish, len(ids), len(new))


def timed_complete(model: ChatModel, messages, **params) -> tuple[Completion, float]:
    started = time.perf_counter()
    result = model.complete(messages, **params)
    return result, time.perf_counter() - started
