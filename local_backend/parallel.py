"""The peers a training process trains with: the strategies the trainer calls at each step
(sharding a micro-batch, summing gradients, agreeing on a stop). Launching processes is
:mod:`local_backend.launch`; sharding the frozen base is :mod:`local_backend.fsdp`.

Data parallel: every rank reads the whole data set in the same (seed, epoch) order and takes
its share of each micro-batch (``rows[rank::world]``). The loss of a share is divided by the
*global* number of labelled tokens of the optimiser step, and gradients are summed across ranks
with one all-reduce of the flattened trainable (LoRA) gradients per step, the algorithm of
DistributedDataParallel; the model is not wrapped in ``DistributedDataParallel`` only so the
normalisation is by the global token count, which makes N processes step exactly as one process
with the same global batch. Clipping, optimiser and scheduler then run on identical gradients,
so the ranks' adapters stay identical.

Every step the ranks agree on stopping (cancel / pause / SIGTERM seen by any rank), so all stop
at the same step boundary after rank 0's checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SingleProcess:
    """The trainer's view of its peers when it has none."""

    rank = 0
    world_size = 1
    is_main = True
    lockstep = False  # True: every rank must run every forward (FSDP gathers weights together)
    shards_base = False  # True: the frozen base is sharded across the ranks (local_backend/fsdp.py)

    def prepare_model(self, model: Any, *, device: str, emit: Any) -> Any:
        """The model as this rank trains it (sharded with ``-o fsdp=true``)."""
        return model

    def shard(self, rows: Sequence) -> Sequence:
        return rows

    def sync_gradients(self, params: Sequence) -> None:
        pass

    def reduce_sums(self, values: dict[str, float], *, skip: Sequence[str] = ()) -> dict[str, float]:
        return values

    def agree(self, stop: str | None) -> str | None:
        return stop

    def barrier(self) -> None:
        pass


class DataParallel(SingleProcess):
    _STOPS = (None, "pause", "cancel")  # agreed by max: cancel wins over pause

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0

    def shard(self, rows: Sequence) -> Sequence:
        return rows[self.rank :: self.world_size]

    def sync_gradients(self, params: Sequence) -> None:
        import torch

        # A rank whose share was empty contributes zeros.
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce(flat, op=self.dist.ReduceOp.SUM)
        offset = 0
        for parameter in params:
            size = parameter.numel()
            parameter.grad = flat[offset : offset + size].view_as(parameter).clone()
            offset += size

    def reduce_sums(self, values: dict[str, float], *, skip: Sequence[str] = ()) -> dict[str, float]:
        gathered: list[dict[str, float]] = [{} for _ in range(self.world_size)]
        self.dist.all_gather_object(gathered, values)
        total = dict(values)
        for name in {n for part in gathered for n in part} - set(skip):
            total[name] = sum(part.get(name, 0.0) for part in gathered)
        return total

    def agree(self, stop: str | None) -> str | None:
        import torch

        code = torch.tensor([self._STOPS.index(stop if stop in self._STOPS else "cancel")])
        self.dist.all_reduce(code, op=self.dist.ReduceOp.MAX)
        return self._STOPS[int(code)]

    def barrier(self) -> None:
        self.dist.barrier()


def peer_failure(exc: BaseException) -> bool:
    """An error that means another rank (or the launcher) went away, not a problem of this one."""
    import torch.distributed as dist

    text = str(exc).lower()
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        marker in text for marker in ("connection closed by peer", "connection reset", "broken pipe", "gloo", "nccl")
    )
