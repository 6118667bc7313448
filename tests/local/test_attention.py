"""The padding-free attention paths on CPU: which path each kind of layer takes and why, the
exact path's sliding window, soft-capping and dropout, and the output head the chunked loss
may multiply directly. (tests/local/test_gpu_bench.py runs the whole-model comparisons against
transformers' eager forward; the CUDA-only fast path is checked by benchmarks/gpu_check.py on a GPU.)"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from local_backend import attention  # noqa: E402
from local_backend.losses import plain_head  # noqa: E402


def _qkv(tokens: int, heads: int = 4, kv_heads: int = 2, dim: int = 8):  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(1, h, tokens, dim, generator=generator) for h in (heads, kv_heads, kv_heads)]


def _forward(q, k, v, bounds, **kwargs):  # type: ignore[no-untyped-def]
    cu = torch.tensor(bounds, dtype=torch.int32)
    out, _ = attention.varlen_attention_forward(None, q, k, v, None, scaling=0.3, cu_seq_lens_q=cu,
                                                max_length_q=max(b - a for a, b in zip(bounds, bounds[1:])), **kwargs)
    return out[0]


def _reference(q, k, v, bounds, *, window=None, softcap=None):  # type: ignore[no-untyped-def]
    """Attention written out per sequence: scores, cap, causal (windowed) mask, softmax."""
    outputs = []
    groups = q.shape[1] // k.shape[1]
    for start, stop in zip(bounds, bounds[1:]):
        qs = q[0, :, start:stop]
        ks = k[0, :, start:stop].repeat_interleave(groups, 0)
        vs = v[0, :, start:stop].repeat_interleave(groups, 0)
        scores = qs @ ks.transpose(1, 2) * 0.3
        if softcap:
            scores = torch.tanh(scores / softcap) * softcap
        i = torch.arange(stop - start)
        allowed = (i[:, None] >= i[None, :]) & ((i[:, None] - i[None, :] < window) if window else True)
        outputs.append((scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ vs).transpose(0, 1))
    return torch.cat(outputs)


@pytest.mark.parametrize("window,softcap", [(None, None), (3, None), (None, 2.0), (3, 2.0)])
def test_exact_path_honours_window_and_softcap(window, softcap) -> None:  # type: ignore[no-untyped-def]
    q, k, v = _qkv(17)
    bounds = (0, 6, 17)
    got = _forward(q, k, v, bounds, sliding_window=window, softcap=softcap)
    want = _reference(q, k, v, bounds, window=window, softcap=softcap)
    assert torch.allclose(got, want, atol=1e-5)
    if window or softcap:  # control: ignoring them would be visibly wrong
        assert not torch.allclose(_forward(q, k, v, bounds), want, atol=1e-3)


def test_exact_path_applies_attention_dropout() -> None:
    q, k, v = _qkv(12)
    bounds = (0, 5, 12)
    plain = _forward(q, k, v, bounds)
    torch.manual_seed(1)
    dropped = _forward(q, k, v, bounds, dropout=0.5)
    torch.manual_seed(1)
    again = _forward(q, k, v, bounds, dropout=0.5)
    assert not torch.allclose(dropped, plain) and torch.equal(dropped, again)


def test_each_kind_of_layer_says_which_path_it_takes() -> None:
    from transformers import Gemma2Config, Phi3Config

    phi3 = attention.prepare_model(Phi3Config(hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                                              sliding_window=2047), "cpu")
    assert phi3 == ["sliding window 2047: " + attention.EXACT + " (no CUDA device: exact path)"]
    gemma = attention.prepare_model(Gemma2Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                                 head_dim=16, num_hidden_layers=2, sliding_window=8,
                                                 attn_logit_softcapping=50.0), "cuda")
    assert len(gemma) == 2 and all("soft-capping 50" in line and attention.EXACT in line for line in gemma)
    assert gemma[0].startswith("full") and gemma[1].startswith("sliding window 8")


def test_only_a_plain_linear_head_is_multiplied_directly() -> None:
    plain = torch.nn.Linear(8, 16)
    assert plain_head(plain) == (plain.weight, plain.bias)

    class Subclass(torch.nn.Linear):
        pass

    assert plain_head(Subclass(8, 16)) is None
    bnb = pytest.importorskip("bitsandbytes")
    assert plain_head(bnb.nn.Linear4bit(8, 16)) is None  # packed 4-bit weights: call the module
