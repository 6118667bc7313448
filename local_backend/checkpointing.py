"""Activation checkpointing of the decoder layers: which layers, and where their saved inputs wait.

Two options (hyperparameters, ``-o``):

- ``checkpoint_every_n_layers`` (int >= 1, default 1): checkpoint decoder layers 0, N, 2N, ...;
  the others keep their activations for the backward pass. 1 = every layer (least memory);
  larger values buy speed (no recompute of those layers) with memory.
- ``activation_offload`` (auto | cpu | none): with ``cpu`` the input each checkpointed layer saves
  for its recompute (B x T x hidden: for a 3.8B model, 32 layers x 16k tokens x 3072 x bf16, about
  3 GB per micro-batch, the largest activation cost left under checkpointing) is copied to pinned
  host memory on a side CUDA stream as soon as it is saved, and copied back one layer ahead of its
  recompute in the backward pass, so both copies overlap the layers' compute (the idea of Unsloth's
  "offloaded gradient checkpointing"). ``auto`` = ``cpu`` on CUDA when checkpointing is on and a
  one-time functional check of the copies passes (reported, else ``none``); ``none`` on CPU, where
  activations already live in host memory. On a CPU device ``cpu`` still runs the hooks (the
  "offloaded" copy is a host clone, no pinning): that is how the path is tested without a GPU.

Only the layer-boundary tensors move. Our ``saved_tensors_hooks`` context is open only around
torch's non-reentrant ``checkpoint`` call; inside it torch installs its own hooks for everything the
layer saves, so ours see exactly what the checkpoint keeps for the recompute: the layer's positional
tensor inputs (the hidden states; keyword inputs such as the rotary tables are shared by every layer
and stay where they are). Integer tensors are left alone. transformers >= 5.2x has its own
``offload=`` (``save_on_cpu``, copies on the compute stream, so the step waits for them); this works
on every transformers 5 release through the ``_gradient_checkpointing_func`` that its
``GradientCheckpointingLayer`` calls.
"""

from __future__ import annotations

import weakref
from typing import Any

OFFLOAD_CHOICES = ("auto", "cpu", "none")


def resolve(config: Any, device: str, checkpointing: bool) -> tuple[str, int]:
    """(activation_offload as it will run before the CUDA check: cpu | none, checkpoint_every_n_layers);
    ValueError for values the documented options do not allow."""
    offload = getattr(config, "activation_offload", "auto")
    every = getattr(config, "checkpoint_every_n_layers", 1)
    if offload not in OFFLOAD_CHOICES:
        raise ValueError(f"activation_offload must be one of {', '.join(OFFLOAD_CHOICES)}, not {offload!r}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"checkpoint_every_n_layers must be an integer >= 1, not {every!r}")
    if offload == "cpu" and not checkpointing:
        raise ValueError("activation_offload: cpu moves the inputs of checkpointed layers, so it needs "
                         "gradient_checkpointing (on by default on CUDA)")
    if offload == "auto":
        offload = "cpu" if device == "cuda" and checkpointing else "none"
    return offload, every


def describe(offload: str, every: int, checkpointing: bool) -> str:
    if not checkpointing:
        return "no activation checkpointing"
    which = "every decoder layer" if every == 1 else f"every {every}th decoder layer"
    where = ", its saved inputs offloaded to pinned host memory" if offload == "cpu" else ""
    return f"activation checkpointing of {which}{where}"


class _Saved:
    """One offloaded tensor: its host copy, and (once fetched) the device copy and when it is ready."""

    __slots__ = ("host", "device", "on_device", "ready", "previous", "__weakref__")

    def __init__(self, host, device, previous) -> None:  # type: ignore[no-untyped-def]
        self.host = host
        self.device = device
        self.on_device = None
        self.ready = None
        self.previous = previous  # weak reference to the tensor saved just before: recomputed next


class Offloader:
    """``saved_tensors_hooks`` pair that keeps floating-point saved tensors in host memory."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = device == "cuda"
        self.stream = torch.cuda.Stream() if self.cuda else None
        self.last: Any = None  # weak reference to the last _Saved (never keeps a step's copies alive)
        self.moved = 0  # tensors offloaded so far (the checks read it)

    def hooks(self):  # type: ignore[no-untyped-def]
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    def pack(self, tensor):  # type: ignore[no-untyped-def]
        import torch

        if not tensor.is_floating_point() or (tensor.device.type == "cuda") != self.cuda:
            return tensor
        if self.cuda:
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self.stream.wait_stream(torch.cuda.current_stream())  # the tensor is computed
            with torch.cuda.stream(self.stream):
                host.copy_(tensor, non_blocking=True)
            tensor.record_stream(self.stream)  # its memory is not reused before the copy is done
        else:
            host = tensor.detach().clone()
        saved = _Saved(host, tensor.device, self.last)
        self.last = weakref.ref(saved)
        self.moved += 1
        return saved

    def _fetch(self, saved: _Saved) -> None:
        import torch

        if saved.on_device is not None:
            return
        if not self.cuda:
            saved.on_device = saved.host.clone()
            return
        on_device = torch.empty(saved.host.shape, dtype=saved.host.dtype, device=saved.device)
        self.stream.wait_stream(torch.cuda.current_stream())  # the memory's earlier users are done
        with torch.cuda.stream(self.stream):
            on_device.copy_(saved.host, non_blocking=True)  # after the copy out: same stream
            saved.ready = torch.cuda.Event()
            saved.ready.record(self.stream)
        on_device.record_stream(self.stream)  # freed unused (a graph dropped early): not reused mid-copy
        saved.on_device = on_device

    def unpack(self, saved):  # type: ignore[no-untyped-def]
        if not isinstance(saved, _Saved):
            return saved
        self._fetch(saved)
        previous = saved.previous() if saved.previous is not None else None
        saved.previous = None
        if previous is not None:
            self._fetch(previous)  # the next layer to recompute: its copy runs beside this layer's work
        tensor, ready = saved.on_device, saved.ready
        saved.on_device = saved.ready = None  # unpacked again (retain_graph): copied again from the host
        if ready is not None:
            import torch

            torch.cuda.current_stream().wait_event(ready)
        return tensor


def checkpoint_function(offloader: Offloader | None):  # type: ignore[no-untyped-def]
    """What transformers' ``GradientCheckpointingLayer`` calls as ``_gradient_checkpointing_func``."""
    from torch.utils.checkpoint import checkpoint

    def run(function, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("use_reentrant", False)
        if offloader is None:
            return checkpoint(function, *args, **kwargs)
        with offloader.hooks():
            return checkpoint(function, *args, **kwargs)

    return run


def configure(model, *, every: int, offloader: Offloader | None) -> int:  # type: ignore[no-untyped-def]
    """After transformers enabled checkpointing: checkpoint every ``every``th decoder layer through
    our function. Returns how many layers are checkpointed."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    function = checkpoint_function(offloader)
    checkpointed = 0
    for module in model.modules():
        if hasattr(module, "gradient_checkpointing"):
            module._gradient_checkpointing_func = function
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = index % every == 0
        checkpointed += int(layer.gradient_checkpointing)
    return checkpointed


_CHECKED: list = []  # the one result of offload_check in this process


def offload_check() -> str | None:
    """One-time functional check of the CUDA copies: a checkpointed block with and without the
    offload hooks gives the same output and gradients. None when it passes, else why not."""
    if not _CHECKED:
        _CHECKED.append(_offload_check())
    return _CHECKED[0]


def _offload_check() -> str | None:
    try:
        import torch

        generator = torch.Generator(device="cuda").manual_seed(0)
        weight = torch.randn(256, 256, device="cuda", generator=generator) / 16
        x = torch.randn(8, 512, 256, device="cuda", generator=generator)

        def block(h):  # type: ignore[no-untyped-def]
            return torch.tanh(h @ weight) + h

        results = []
        for offloader in (Offloader("cuda"), None):
            run = checkpoint_function(offloader)
            h = x.clone().requires_grad_(True)
            out = run(block, run(block, h))
            out.square().sum().backward()
            results.append((out.detach(), h.grad))
            if offloader is not None and offloader.moved < 2:
                return f"the hooks moved {offloader.moved} tensors, expected 2"
        (out_a, grad_a), (out_b, grad_b) = results
        if not (torch.equal(out_a, out_b) and torch.allclose(grad_a, grad_b, rtol=1e-5, atol=1e-6)):
            return "offloaded and on-device checkpointing disagree"
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means: do not offload, and say why
        return f"{type(exc).__name__}: {exc}"
