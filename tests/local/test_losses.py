"""Equivalence on CPU of the CUDA recipe's loss and batching paths with the plain ones:
chunked linear cross-entropy equals full-logit cross-entropy (value and gradients), and a
padding-free batch (several packed rows flattened into one, variable-length attention)
equals the same examples run one by one (logits and gradients).

Tolerances: fp32 on CPU; the paths add the same numbers in a different order, so values
agree to ~1e-6 relative and we assert 1e-5 (gradients 1e-4 relative to their scale)."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_backend import data
from local_backend.losses import chunked_token_nll, labelled_targets, plain_token_nll
from local_backend.trainer import Trainer, TrainConfig
from tests.local.conftest import write_training_file


def _trainer(model: Path, train: Path, out: Path, **overrides) -> Trainer:  # type: ignore[no-untyped-def]
    settings = dict(
        base_model=str(model), train_file=str(train), epochs=1, batch_size=4, learning_rate=1e-2,
        lora_r=8, lora_alpha=16, max_seq_len=64, checkpoint_every=0, seed=7,
    )
    settings.update(overrides)
    trainer = Trainer(TrainConfig(**settings), out)
    trainer.setup()
    _randomise_lora(trainer)
    return trainer


def _randomise_lora(trainer: Trainer) -> None:
    """LoRA B starts at zero (the adapter is a no-op); give it weights so gradients reach A too."""
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in trainer.model.named_parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def _lora_grads(trainer: Trainer) -> dict:
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.model.zero_grad(set_to_none=True)
    return grads


def _assert_close_grads(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys() and a
    for name in a:
        scale = float(a[name].abs().max()) + 1e-12
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-4 * scale), name


def test_chunked_cross_entropy_equals_full_logits_value_and_gradients() -> None:
    import torch

    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = torch.randint(0, 50, (2, 9))
    labels[0, :4] = -100  # a prompt, not trained
    labels[1, 7:] = -100  # padding
    plain = plain_token_nll(hidden @ weight.T, labels)
    plain.sum().backward()
    plain_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    mask, targets = labelled_targets(labels)
    chunked = chunked_token_nll(hidden[:, :-1][mask], weight, targets, chunk_tokens=3)  # 3 chunks, last one short
    chunked.sum().backward()
    assert plain.shape == chunked.shape == (int(mask.sum()),)
    assert torch.allclose(plain, chunked, rtol=1e-5, atol=1e-6)
    assert torch.allclose(plain_grads[0], hidden.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(plain_grads[1], weight.grad, rtol=1e-5, atol=1e-6)


def test_trainer_chunked_loss_equals_plain_loss_and_lora_gradients(tiny_model_dir: Path, tmp_path: Path) -> None:
    train = write_training_file(tmp_path / "train.jsonl", count=6)
    results = {}
    for impl in ("plain", "chunked"):
        trainer = _trainer(tiny_model_dir, train, tmp_path / impl, loss_impl=impl, loss_chunk_tokens=5)
        batch = trainer.collate(data.rows_padded(trainer.train_examples[:4]))
        loss = trainer._loss_sum(batch)
        loss.backward()
        results[impl] = (float(loss), _lora_grads(trainer))
    assert results["plain"][0] == pytest.approx(results["chunked"][0], rel=1e-5)
    _assert_close_grads(results["plain"][1], results["chunked"][1])


def test_padding_free_batch_equals_examples_run_one_by_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Two packed rows (five examples) flattened into one padding-free row: every example's
    logits and the summed loss's LoRA gradients match running each example alone, padded
    path, attention mask and all. Control: without position restarts they do not match."""
    import torch

    train = write_training_file(tmp_path / "train.jsonl", count=5)
    trainer = _trainer(tiny_model_dir, train, tmp_path / "out", packing=True, loss_impl="plain")
    examples = trainer.train_examples
    rows = data.rows_packed(examples, max_length=3 * len(examples[0].input_ids))
    assert len(rows) == 2  # batch size 2: rows must stay separate from each other too
    packed = data.collate_padding_free(rows)
    assert packed["input_ids"].shape[0] == 1 and len(packed["cu_seq_lens_q"]) == len(examples) + 1

    packed_logits = trainer.model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                                  cu_seq_lens_q=packed["cu_seq_lens_q"], max_length_q=packed["max_length_q"]).logits[0]
    loss = trainer._loss_sum(packed)
    loss.backward()
    packed_grads = _lora_grads(trainer)

    alone_logits, alone_loss = [], 0.0
    for example in examples:
        batch = data.collate(data.rows_padded([example]), trainer.tokenizer.pad_token_id, packed=False)
        alone_logits.append(trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0])
        one = trainer._loss_sum(batch)
        one.backward()
        alone_loss += float(one)
    alone_grads = _lora_grads(trainer)
    assert torch.allclose(packed_logits, torch.cat(alone_logits), rtol=1e-5, atol=1e-5)
    assert float(loss) == pytest.approx(alone_loss, rel=1e-5)
    _assert_close_grads(packed_grads, alone_grads)

    with torch.no_grad():
        leaky = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).unsqueeze(0),
                     cu_seq_lens_q=torch.tensor([0, packed["input_ids"].shape[1]], dtype=torch.int32))
        assert float(trainer._loss_sum(leaky)) != pytest.approx(alone_loss, rel=1e-3)


def test_length_grouped_order_is_deterministic_and_groups_lengths() -> None:
    lengths = [5, 50, 7, 48, 6, 49, 8, 47]
    order = data.epoch_order(len(lengths), seed=3, epoch=1)
    grouped = data.length_grouped(order, lengths, batch_size=2, seed=3, epoch=1)
    assert sorted(grouped) == list(range(8))
    assert grouped == data.length_grouped(order, lengths, batch_size=2, seed=3, epoch=1)
    batches = [grouped[i : i + 2] for i in range(0, 8, 2)]
    # each batch pairs similar lengths: padding is at most 2 tokens instead of up to 45
    assert all(abs(lengths[a] - lengths[b]) <= 2 for a, b in batches)


def test_cuda_style_loop_on_cpu_trains_the_same_adapter_as_the_plain_loop(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The whole loop with the CUDA recipe's paths (padding-free packed + length-grouped
    batches, non-reentrant gradient checkpointing, chunked loss) ends with the same adapter
    as with plain full-logit loss and no checkpointing, on the same batches."""
    import torch
    from safetensors.torch import load_file

    train = write_training_file(tmp_path / "train.jsonl", count=12)
    common = dict(base_model=str(tiny_model_dir), train_file=str(train), epochs=2, batch_size=2, learning_rate=1e-2,
                  lora_r=8, lora_alpha=16, max_seq_len=64, checkpoint_every=0, seed=7, packing=True,
                  group_by_length=True)
    adapters = {}
    for name, extra in {"cuda-style": dict(gradient_checkpointing=True, loss_impl="chunked", loss_chunk_tokens=7),
                        "plain": dict(gradient_checkpointing=False, loss_impl="plain")}.items():
        trainer = Trainer(TrainConfig(**common, **extra), tmp_path / name)
        trainer.setup()
        assert trainer.padding_free and trainer.group_by_length
        trainer.train()
        adapters[name] = load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors"))
    a, b = adapters["cuda-style"], adapters["plain"]
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
