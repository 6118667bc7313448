"""Launching local training on several processes (GPUs, or CPU processes with gloo) and
machines, under torch's own launcher, ``torch.distributed.run`` (torchrun).

``-o num_processes=N`` (and ``nnodes``, ``node_rank``, ``rdzv_endpoint`` for several machines)
puts a ``distributed`` section in the job's spec. The job's worker of record (the process that
holds ``worker.lock``, local_backend/worker.py) then becomes a supervisor: it runs torchrun,
which starts one rank per process, each ``python -m local_backend.launch --rank JOB_DIR``.
What the ranks do together at each step is :mod:`local_backend.parallel` (data parallel) and
:mod:`local_backend.fsdp` (``-o fsdp=true``: the frozen base sharded with FSDP2, for a base
that does not fit one device).

Rank 0 writes status, events, checkpoints and the adapter; the others write nothing. A rank
that dies makes torchrun stop the others; the supervisor then records the attempt as failed
with the resumable ``worker_died`` code, and ``cloudtune resume`` restarts every rank from the
last checkpoint. Ranks die with the supervisor (PR_SET_PDEATHSIG), so a ``kill -9`` of the job
leaves no orphan training on.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from local_backend import procs
from local_backend.jobs import JobDir, now_iso
from local_backend.parallel import DataParallel, peer_failure

OPTIONS = {
    "num_processes": "local: training processes per machine (one per GPU; CPU processes with gloo)",
    "nnodes": "local: machines taking part in a multi-node training run",
    "node_rank": "local: this machine's index (0 = the one that runs cloudtune)",
    "rdzv_endpoint": "local: HOST:PORT of node 0 that every node connects to (multi-node)",
    "fsdp": "local: true = shard the frozen base across the processes (FSDP2), for a base too big for one device",
}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")
_REPO_ROOT = Path(__file__).resolve().parent.parent


def distributed_spec(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec's ``distributed`` section from provider options; None for one process."""
    from cloudtune import errors

    try:
        processes = int(options.get("num_processes") or 1)
        nnodes = int(options.get("nnodes") or 1)
        node_rank = int(options.get("node_rank") or 0)
    except (TypeError, ValueError):
        raise errors.InvalidInput("num_processes, nnodes and node_rank must be whole numbers") from None
    endpoint = options.get("rdzv_endpoint")
    if processes < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise errors.InvalidInput(f"Invalid distributed layout: num_processes={processes}, nnodes={nnodes}, node_rank={node_rank}")
    if nnodes > 1 and not (isinstance(endpoint, str) and ":" in endpoint):
        raise errors.InvalidInput("A multi-node run needs -o rdzv_endpoint=HOST:PORT (node 0's address, reachable by every node)")
    fsdp = str(options.get("fsdp") or "").strip().lower()  # a YAML boolean arrives as True/False
    if fsdp not in _TRUE + _FALSE:
        raise errors.InvalidInput(f"-o fsdp must be true or false, not {options.get('fsdp')!r}")
    if processes == 1 and nnodes == 1:
        if fsdp in _TRUE:
            raise errors.InvalidInput("-o fsdp=true shards the base across processes: it needs -o num_processes=N with N >= 2 (or several nodes)")
        return None
    return {"num_processes": processes, "nnodes": nnodes, "node_rank": node_rank, "rdzv_endpoint": endpoint, "fsdp": fsdp in _TRUE}


def torchrun_command(job_dir: Path, layout: Mapping[str, Any], *, python: str = sys.executable) -> list[str]:
    command = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(layout["num_processes"]), "--max_restarts", "0"]
    if int(layout.get("nnodes") or 1) == 1:
        command.append("--standalone")  # a free local port, no address to choose
    else:
        host, port = str(layout["rdzv_endpoint"]).rsplit(":", 1)
        command += ["--nnodes", str(layout["nnodes"]), "--node_rank", str(layout["node_rank"]), "--master_addr", host, "--master_port", port]
    return command + ["-m", "local_backend.launch", "--rank", str(job_dir)]


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this rank when its launcher dies (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def rank_main(job_dir: Path) -> int:
    import torch
    import torch.distributed as dist

    from local_backend.runner import JobRunner

    _die_with_parent()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    layout = json.loads((job_dir / "spec.json").read_text()).get("distributed") or {}
    if layout.get("fsdp"):
        from local_backend.fsdp import ShardedDataParallel

        parallel: DataParallel = ShardedDataParallel()
    else:
        parallel = DataParallel()
    (job_dir / f"rank-{parallel.rank}.pid").write_text(str(os.getpid()))

    class RankWorker(JobRunner):
        def make_trainer(self, config, **kwargs):
            return super().make_trainer(config, parallel=parallel, **kwargs)

        def record_failure(self, exc: BaseException) -> None:
            if self.signalled or peer_failure(exc):
                return  # a peer or the launcher went first: the supervisor records the attempt
            if parallel.is_main:
                return super().record_failure(exc)
            message = {"rank": parallel.rank, "code": getattr(exc, "code", None) or type(exc).__name__, "message": f"{type(exc).__name__}: {exc}"}
            (job_dir / f"rank-{parallel.rank}.error").write_text(json.dumps(message))

    worker = RankWorker(job_dir)
    if not parallel.is_main:  # only rank 0 reports
        worker.job.write_status = lambda **changes: {}  # type: ignore[method-assign]
        worker.job.add_event = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        return worker.run()
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a peer already gone
            pass


# ---------------------------------------------------------------- the worker of record
def supervise(job: JobDir, layout: Mapping[str, Any]) -> int:
    """Run the ranks under torchrun and record what became of the attempt."""
    for stale in list(job.path.glob("rank-*.error")) + list(job.path.glob("rank-*.pid")):
        stale.unlink(missing_ok=True)

    def polite_stop(signum, frame) -> None:
        # `kill PID` on the job's worker: the ranks save and stop together, resumable.
        if not job.stop_path.exists():
            job.request_stop("pause")

    signal.signal(signal.SIGTERM, polite_stop)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    command = torchrun_command(job.path, layout)
    print("launching: " + " ".join(command), file=sys.stderr, flush=True)
    # The launcher dies with this process, and each rank with the launcher (_die_with_parent).
    launcher = subprocess.Popen(command, env=env, cwd=str(job.path), preexec_fn=_die_with_parent)  # noqa: PLW1509
    while True:
        try:
            code = launcher.wait()
            break
        except InterruptedError:
            continue
    status = job.raw_status()
    if code == 0 and status.get("status") in ("succeeded", "cancelled", "paused"):
        return 0
    if status.get("status") == "succeeded":
        # Rank 0 writes "succeeded" after the last step and the adapter are saved, which every
        # rank took part in: a rank that died after that took nothing of the result with it.
        job.add_event(job.next_event_number(), "warning", f"A training process exited badly after the job had succeeded (torchrun exit code {code}); the adapter is complete", {})
        return 0
    rank_errors = [json.loads(p.read_text()) for p in sorted(job.path.glob("rank-*.error"))]
    if status.get("status") == "failed" and (status.get("error") or {}).get("code") != "worker_died":
        return 1  # rank 0 recorded a failure of its own
    if rank_errors:
        first = rank_errors[0]
        job.write_status(status="failed", finished_at=now_iso(), pid=None, error={"code": str(first["code"]), "message": f"rank {first['rank']}: {first['message']}"})
        job.add_event(job.next_event_number(), "error", f"Training failed on rank {first['rank']}: {first['message']}", {"status": "failed"})
        return 1
    reason = f"a training process exited (torchrun exit code {code}); all ranks were stopped"
    job.write_status(
        status="failed",
        finished_at=now_iso(),
        pid=None,
        error={"code": "worker_died", "message": f"{reason}; resume it to continue from the last checkpoint"},
        resumable=True,
    )
    job.add_event(job.next_event_number(), "error", f"Worker died: {reason}", {"status": "failed"})
    return 1


def join(job_dir: Path, node_rank: int) -> int:
    """Run this machine's ranks of a multi-node job whose directory is on shared storage
    (``python -m local_backend.worker JOB_DIR --node-rank K``). Node 0's worker records the job."""
    layout = dict(json.loads((job_dir / "spec.json").read_text()).get("distributed") or {})
    if int(layout.get("nnodes") or 1) < 2 or not 0 < node_rank < int(layout["nnodes"]):
        print(f"{job_dir.name} is not a multi-node job with a node {node_rank}", file=sys.stderr)
        return 2
    layout["node_rank"] = node_rank
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.call(torchrun_command(job_dir, layout), env=env, cwd=str(job_dir), preexec_fn=_die_with_parent)


def _leave_without_finalizing(code: int) -> NoReturn:
    """End a rank here, skipping the interpreter's finalization.

    A rank whose work was done was seen to abort in finalization ("terminate called without an
    active exception", SIGABRT; once, in a full test run on the 2-core CI machine, 2026-12-06:
    its peer, rank 0, died of torchrun's SIGTERM at once, so it was finalizing too, Python's
    handler for it already gone); torchrun then reported the attempt as failed. Tearing down an interpreter whose C++ side still has gloo's
    threads and their tensors is a known way for a torch process to die that way (pytorch/pytorch
    PR 179291, 2026-04: "destroying these tensors triggers a GIL acquire that crashes with
    SIGABRT because the interpreter is being torn down"). Everything a rank must leave behind is
    written before ``rank_main`` returns (status, events, checkpoints, the adapter, each closed
    on write), so what is left is flushing the output and leaving."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing more can reach the log
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--rank":
        procs.skip_unused_imports()
        try:
            code = rank_main(Path(argv[1]))
        except BaseException:  # noqa: BLE001 - the log must say why a rank left
            traceback.print_exc()
            code = 1
        _leave_without_finalizing(code)
    print("usage: python -m local_backend.launch --rank JOB_DIR (started by torchrun)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
