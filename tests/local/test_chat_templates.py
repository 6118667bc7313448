"""The assistant-only mask on real chat templates (Phi-3, Phi-3.5, Phi-4, Llama-3, Qwen-2.5,
SmolLM2), shipped as text in tests/local/data/chat_templates with each model's special
tokens, paired with a tiny BPE tokenizer trained here with ``tokenizers``.

Each test asserts exactly which tokens are trained: every assistant turn including its
end-of-turn token, and nothing past it (the next header is never trained). Run with
``-s`` to see the decoded trained spans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local_backend.chat_format import IGNORE_INDEX, encode_chat, prompt_ids

DATA = Path(__file__).parent / "data" / "chat_templates"
MODELS = json.loads((DATA / "models.json").read_text())

MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Question number 1?"},
    {"role": "assistant", "content": "Ahoy matey!"},
    {"role": "user", "content": "Question number 2?"},
    {"role": "assistant", "content": "Arr."},
]
SINGLE_TURN = [{"role": "user", "content": "Question number 3?"}, {"role": "assistant", "content": "Ahoy matey!"}]


def _render(template: str, messages: list[dict], **special: str | None) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=False, **special)


def _tokenizer(name: str, *, with_special_tokens: bool = True):  # type: ignore[no-untyped-def]
    """A byte-level BPE trained on conversations rendered with the model's template. With
    ``with_special_tokens=False`` the template's markers are plain text to it (the trap
    where a marker's last piece merges with the next header's first)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    meta = MODELS[name]
    template = (DATA / f"{name}.jinja").read_text()
    if with_special_tokens:
        bos, eos, extra = meta["bos"], meta["eos"], meta["special"]
    else:
        bos, eos, extra = "<|endoftext|>", "<|endoftext|>", []
    texts = [_render(template, c, bos_token=bos or "", eos_token=eos) for c in (MULTI_TURN, SINGLE_TURN)] * 20
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    specials = [t for t in dict.fromkeys([bos, eos, *extra]) if t]
    trainer = trainers.BpeTrainer(
        vocab_size=420, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=eos, pad_token=eos)
    tokenizer.chat_template = template
    return tokenizer


def _trained_runs(tokenizer, encoded) -> list[str]:  # type: ignore[no-untyped-def]
    runs, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(tokenizer.decode(current))
                current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(tokenizer.decode(current))
    return runs


EXPECTED = {
    # Phi-3 ends a rendering without a generation prompt with EOS; that EOS follows the last turn.
    "phi3": ["Ahoy matey!<|end|>\n", "Arr.<|end|>\n<|endoftext|>"],
    "phi3_5": ["Ahoy matey!<|end|>\n", "Arr.<|end|>\n<|endoftext|>"],
    "phi4": ["Ahoy matey!<|im_end|>", "Arr.<|im_end|>"],
    "llama3": ["Ahoy matey!<|eot_id|>", "Arr.<|eot_id|>"],
    "qwen2_5": ["Ahoy matey!<|im_end|>\n", "Arr.<|im_end|>\n"],
    "smollm2": ["Ahoy matey!<|im_end|>\n", "Arr.<|im_end|>\n"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_multi_turn_trains_each_assistant_turn_through_its_end_token(name: str) -> None:
    tokenizer = _tokenizer(name)
    encoded = encode_chat(tokenizer, MULTI_TURN)
    runs = _trained_runs(tokenizer, encoded)
    print(f"\n{name}: trained spans {runs!r}")
    assert runs == EXPECTED[name]
    # nothing is lost or invented: the ids are exactly the template's rendering
    assert tokenizer.decode(encoded.input_ids) == tokenizer.apply_chat_template(MULTI_TURN, tokenize=False)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_multi_turn_without_a_system_message_trains_the_same_spans(name: str) -> None:
    """No system message (Qwen-2.5's template then adds its default one): the same assistant
    turns are trained, and the rendering round-trips."""
    tokenizer = _tokenizer(name)
    no_system = MULTI_TURN[1:]
    encoded = encode_chat(tokenizer, no_system)
    runs = _trained_runs(tokenizer, encoded)
    print(f"\n{name} without system: trained spans {runs!r}")
    assert runs == EXPECTED[name]
    assert tokenizer.decode(encoded.input_ids) == tokenizer.apply_chat_template(no_system, tokenize=False)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_single_turn_matches_what_inference_prompts_with(name: str) -> None:
    """Training text = the inference prompt + the trained answer (so the server's prompt is
    exactly what the model was trained to continue)."""
    tokenizer = _tokenizer(name)
    encoded = encode_chat(tokenizer, SINGLE_TURN)
    runs = _trained_runs(tokenizer, encoded)
    print(f"\n{name}: trained spans {runs!r}")
    assert runs == [EXPECTED[name][-1].replace("Arr.", "Ahoy matey!")]
    prompt = tokenizer.decode(prompt_ids(tokenizer, SINGLE_TURN[:1]))
    assert tokenizer.decode(encoded.input_ids) == prompt + runs[0]


def test_llama3_template_on_a_tokenizer_without_its_special_tokens_trains_nothing_past_the_turn() -> None:
    """``<|eot_id|>`` is plain text here: its last piece would merge with the next header's
    first (``|><|``). The turn's end is cut before tokenising, and since the marker is not a
    stop token, EOS is appended to the last turn so the model still learns to stop."""
    tokenizer = _tokenizer("llama3", with_special_tokens=False)
    text = tokenizer.apply_chat_template(MULTI_TURN, tokenize=False)
    merged = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    end_of_first_turn = text.index("<|eot_id|>") + len("<|eot_id|>")
    # the trap is real with this tokenizer: one token crosses the end of the first turn
    assert any(a < end_of_first_turn < b for a, b in merged["offset_mapping"])
    encoded = encode_chat(tokenizer, MULTI_TURN)
    runs = _trained_runs(tokenizer, encoded)
    print(f"\nllama3 without special tokens: trained spans {runs!r}")
    assert runs == ["Ahoy matey!<|eot_id|>", "Arr.<|eot_id|><|endoftext|>"]
    assert all("start_header" not in run for run in runs)
