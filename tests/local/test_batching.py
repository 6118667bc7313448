"""Concurrent requests on one served model are answered as one batch (local_backend/batching.py):
each row keeps its own answer, limit, stop strings and sampling; a reader that leaves frees its row;
adapters never share a batch. The tiny real model of tests/local/conftest.py, no server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

QUESTIONS = ["Question number 1?", "Question number 22?", "What is the capital of France, and why?",
             "Hi", "Question number 7? Please answer in detail, with every step you take."]


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def chat_model(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from local_backend.inference import ChatModel

    return ChatModel(str(tiny_model_dir))


def _wait_until(condition, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _together(chat_model, requests: list[dict]) -> list:  # type: ignore[no-untyped-def]
    """Start every request while the model is busy, so they wait together and form one batch."""
    results: list = [None] * len(requests)
    sizes_before = len(chat_model.scheduler.batch_sizes)
    with chat_model._lock:  # the model busy (as with a long answer in progress)
        blocker = chat_model.generate(_messages("busy"), max_tokens=1, temperature=0)
        blocker_reader = threading.Thread(target=lambda: list(blocker))
        blocker_reader.start()
        _wait_until(lambda: len(chat_model.scheduler.batch_sizes) > sizes_before)  # the scheduler took it

        def read(index: int, params: dict) -> None:
            generation = chat_model.generate(_messages(params.pop("text")), **params)
            pieces = list(generation)
            results[index] = (pieces, generation.result)

        readers = [threading.Thread(target=read, args=(i, dict(r))) for i, r in enumerate(requests)]
        for queued, reader in enumerate(readers, start=1):
            reader.start()
            # one at a time, so they wait in the listed order (threads started together may queue in any)
            _wait_until(lambda queued=queued: chat_model.scheduler.waiting == queued)
    for reader in [blocker_reader, *readers]:
        reader.join(60)
    return results


def test_waiting_requests_run_as_one_batch_with_the_answers_they_get_alone(chat_model) -> None:  # type: ignore[no-untyped-def]
    alone = [chat_model.complete(_messages(q), max_tokens=12, temperature=0) for q in QUESTIONS]
    sizes_before = list(chat_model.scheduler.batch_sizes)
    together = _together(chat_model, [{"text": q, "max_tokens": 12, "temperature": 0} for q in QUESTIONS])
    assert chat_model.scheduler.batch_sizes[len(sizes_before):] == [1, len(QUESTIONS)]  # blocker, then all
    for single, (pieces, result) in zip(alone, together):
        # prompts of different lengths were left-padded: the same answers as one at a time
        assert result.text == single.text and "".join(pieces).strip() == result.text
        assert (result.finish_reason, result.completion_tokens, result.prompt_tokens) == \
            (single.finish_reason, single.completion_tokens, single.prompt_tokens)


def test_each_row_keeps_its_limit_stop_strings_and_sampling(chat_model) -> None:  # type: ignore[no-untyped-def]
    free = chat_model.complete(_messages(QUESTIONS[2]), max_tokens=10, temperature=0)
    assert free.completion_tokens == 10 and len(free.text) > 3, free
    stop_at = free.text[2:4]  # a stop string inside what the model says
    sampled_alone = chat_model.complete(_messages(QUESTIONS[0]), max_tokens=8, temperature=1.5, seed=7)
    together = _together(chat_model, [
        {"text": QUESTIONS[2], "max_tokens": 3, "temperature": 0},
        {"text": QUESTIONS[2], "max_tokens": 10, "temperature": 0, "stop": [stop_at]},
        {"text": QUESTIONS[0], "max_tokens": 8, "temperature": 1.5, "seed": 7},
        {"text": QUESTIONS[2], "max_tokens": 10, "temperature": 0},
    ])
    short, stopped, sampled, full = (r[1] for r in together)
    assert (short.finish_reason, short.completion_tokens) == ("length", 3)
    assert stopped.finish_reason == "stop" and stop_at not in stopped.text
    assert free.text.startswith(stopped.text)
    assert sampled.text == sampled_alone.text  # its own seeded generator, whatever else is in the batch
    assert (full.text, full.completion_tokens) == (free.text, 10)


def test_a_reader_that_leaves_frees_its_row_and_the_others_finish(chat_model) -> None:  # type: ignore[no-untyped-def]
    alone = chat_model.complete(_messages(QUESTIONS[1]), max_tokens=16, temperature=0)
    full_length = chat_model.complete(_messages(QUESTIONS[4]), max_tokens=64, temperature=0)
    assert full_length.completion_tokens == 64  # left alone, the leaving request would decode 64 tokens
    results: dict[str, object] = {}
    with chat_model._lock:
        leaving = chat_model.generate(_messages(QUESTIONS[4]), max_tokens=64, temperature=0)
        staying = chat_model.generate(_messages(QUESTIONS[1]), max_tokens=16, temperature=0)

        def leave() -> None:
            for _ in leaving:
                leaving.close()  # a client that went away after its first piece
                break
            results["left"] = leaving.result

        def stay() -> None:
            results["pieces"] = list(staying)

        threads = [threading.Thread(target=leave), threading.Thread(target=stay)]
        for thread in threads:
            thread.start()
        _wait_until(lambda: chat_model.scheduler.waiting == 0 and len(chat_model.scheduler.batch_sizes) > 0)
    for thread in threads:
        thread.join(60)
    assert results["left"] is None  # no answer is reported for a stream its reader closed
    _wait_until(lambda: chat_model.scheduler.waiting == 0 and not chat_model._lock.locked())
    assert 1 <= leaving.request.generated < 64  # its row left the batch once its reader went away
    assert staying.result is not None and staying.result.text == alone.text


def test_adapters_never_share_a_batch(chat_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(chat_model.model.name_or_path if hasattr(chat_model.model, "name_or_path")
                                                else chat_model.model.config._name_or_path)
    adapter = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "adapter")
    chat_model.add_adapter("other", tmp_path / "adapter")
    try:
        base_alone = chat_model.complete(_messages(QUESTIONS[0]), adapter=None, max_tokens=8, temperature=0)
        other_alone = chat_model.complete(_messages(QUESTIONS[0]), adapter="other", max_tokens=8, temperature=0)
        sizes_before = list(chat_model.scheduler.batch_sizes)
        together = _together(chat_model, [
            {"text": QUESTIONS[0], "adapter": None, "max_tokens": 8, "temperature": 0},
            {"text": QUESTIONS[0], "adapter": "other", "max_tokens": 8, "temperature": 0},
            {"text": QUESTIONS[0], "adapter": None, "max_tokens": 8, "temperature": 0},
        ])
        # the blocker, then the base's two requests together, then the adapter's
        assert chat_model.scheduler.batch_sizes[len(sizes_before):] == [1, 2, 1]
        assert [r[1].text for r in together] == [base_alone.text, other_alone.text, base_alone.text]
    finally:
        chat_model.remove_adapter("other")
