"""Training on two processes under torchrun (gloo, CPU): the adapter equals the one-process
adapter with the same global batch; a killed rank fails the attempt resumably, pause stops
both ranks, kill -9 of the job's worker takes its ranks with it, and `resume` finishes the
job from the last checkpoint."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from cloudtune import errors, poller
from cloudtune.types import FineTuneSpec, JobState
from tests.local.conftest import fast_hyperparameters, write_training_file

# Sums over two shards instead of one batch change float rounding only; training moves the
# weights by orders of magnitude more than this (asserted below).
STATE_TOLERANCE = 1e-5


def _train(provider, spec: FineTuneSpec, run_id: str):  # type: ignore[no-untyped-def]
    file_id = provider.upload_file(spec.training_file)
    job = provider.create_job(spec, training_file_id=file_id, validation_file_id=None, run_id=run_id)
    return job, poller.wait_for_job(provider, job.id, timeout_s=300, sleep=time.sleep, clock=time.monotonic)


def _adapter(provider, job_id: str) -> dict:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file

    return load_file(str(provider._jobdir(job_id).adapter_dir / "adapter_model.safetensors"))


# Loaded by every Python process started with its folder first on PYTHONPATH; acts in rank 1 of a
# torchrun job only (RANK is set there and nowhere else): once rank 0 has recorded the job as
# succeeded, rank 1 dies of SIGABRT, as a torch process can while the interpreter finalizes.
_RANK_ONE_ABORTS_AFTER_SUCCESS = """
import os
if os.environ.get("RANK") == "1":
    import atexit, json, time
    def _abort_once_the_job_succeeded(code=0):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if json.loads(open("status.json").read()).get("status") == "succeeded":
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        os.abort()
    atexit.register(_abort_once_the_job_succeeded)  # a rank that finalizes
    os._exit = _abort_once_the_job_succeeded  # a rank that skips finalization
"""


def test_two_processes_train_the_same_adapter_as_one(provider, local_home: Path, tiny_model_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from providers.local import LocalProvider

    train = write_training_file(tmp_path / "train.jsonl", count=10)  # 3 micro-batches of 4, 4, 2 rows
    spec = FineTuneSpec(provider="local", base_model=str(tiny_model_dir), training_file=train, seed=5,
                        hyperparameters=fast_hyperparameters(epochs=2, checkpoint_every=0))
    single_job, single = _train(provider, spec, "run-one")
    two = LocalProvider({"num_processes": "2"})
    # A rank that dies after the job is done (here rank 1, of SIGABRT) takes nothing of the result
    # with it: the job stays succeeded, with a warning, and its adapter is the one-process adapter.
    injected = tmp_path / "site"
    injected.mkdir()
    (injected / "sitecustomize.py").write_text(_RANK_ONE_ABORTS_AFTER_SUCCESS)
    with monkeypatch.context() as patched:
        patched.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(injected), os.environ.get("PYTHONPATH")) if p))
        pair_job, pair = _train(two, spec, "run-two")
    pair_log = provider._jobdir(pair_job.id).path.joinpath("worker.log").read_text()
    assert single.state == pair.state == JobState.SUCCEEDED, pair_log[-3000:]
    assert "exitcode  : -6" in pair_log  # rank 1 did die of SIGABRT
    assert any(e.level == "warning" and "after the job had succeeded" in e.message for e in two.list_events(pair_job.id, limit=1000))

    one_state, two_state = _adapter(provider, single_job.id), _adapter(provider, pair_job.id)
    assert one_state.keys() == two_state.keys()
    lora_b = [k for k in one_state if "lora_B" in k]
    assert max(float(one_state[k].abs().max()) for k in lora_b) > 1000 * STATE_TOLERANCE  # B starts at zero: it was trained
    for name, tensor in one_state.items():
        torch.testing.assert_close(two_state[name], tensor, rtol=0, atol=STATE_TOLERANCE)
    # Adam hides a uniform gradient scale, the step metrics do not: the same losses and
    # gradient norms at every step (so no shard counted twice, none missed).
    def step_metrics(source, job_id: str) -> list[float]:  # type: ignore[no-untyped-def]
        events = source.list_events(job_id, limit=1000)
        return [v for e in events if e.data.get("kind") == "metrics" and "grad_norm" in e.data for v in (e.data["train_loss"], e.data["grad_norm"])]

    one_steps, two_steps = step_metrics(provider, single_job.id), step_metrics(two, pair_job.id)
    assert len(one_steps) == len(two_steps) == 2 * 6
    assert two_steps == pytest.approx(one_steps, rel=1e-4)
    # the ranks' events are reported once (rank 0), with the whole run's step count
    messages = [e.message for e in two.list_events(pair_job.id, limit=1000)]
    assert sum(m.startswith("Training started") for m in messages) == 1
    assert single.trained_tokens == pair.trained_tokens

    # Two "machines" (here both on loopback) sharing the job directory: node 0 is the provider's
    # worker, node 1 joins with `python -m local_backend.worker JOB_DIR --node-rank 1`.
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node0 = LocalProvider({"nnodes": "2", "node_rank": "0", "rdzv_endpoint": f"127.0.0.1:{port}"})
    nodes_job = node0.create_job(spec, training_file_id=node0.upload_file(train), validation_file_id=None, run_id="run-nodes")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    node1 = subprocess.Popen([sys.executable, "-m", "local_backend.worker", str(node0._jobdir(nodes_job.id).path), "--node-rank", "1"], env=env)
    try:
        nodes = poller.wait_for_job(node0, nodes_job.id, timeout_s=300, sleep=time.sleep, clock=time.monotonic)
        assert node1.wait(timeout=120) == 0
    finally:
        if node1.poll() is None:
            node1.kill()
    assert nodes.state == JobState.SUCCEEDED
    for name, tensor in one_state.items():
        torch.testing.assert_close(_adapter(node0, nodes_job.id)[name], tensor, rtol=0, atol=STATE_TOLERANCE)


def test_a_killed_rank_fails_the_attempt_and_resume_finishes(provider, local_home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    from local_backend.procs import pid_alive
    from local_backend.tiny import build_tiny_model
    from providers.local import LocalProvider
    from tests.local.conftest import chat_example

    model = build_tiny_model(tmp_path / "slower", [json.dumps(chat_example(i)) for i in range(20)],
                             hidden_size=256, intermediate_size=768, layers=4)
    train = write_training_file(tmp_path / "train.jsonl", count=16)
    spec = FineTuneSpec(provider="local", base_model=str(model), training_file=train, seed=3,
                        hyperparameters=fast_hyperparameters(epochs=12, checkpoint_every=2))  # 48 steps: time to kill one
    two = LocalProvider({"num_processes": "2"})
    job = two.create_job(spec, training_file_id=two.upload_file(train), validation_file_id=None, run_id="run-kill")
    job_dir = two._jobdir(job.id).path
    deadline = time.monotonic() + 240
    while not list((job_dir / "checkpoints").glob("step-*/trainer_state.pt")):
        assert time.monotonic() < deadline and two.get_job(job.id).state not in (JobState.FAILED, JobState.SUCCEEDED)
        time.sleep(0.2)
    rank_pids = {rank: int((job_dir / f"rank-{rank}.pid").read_text()) for rank in (0, 1)}
    os.kill(rank_pids[1], signal.SIGKILL)

    failed = poller.wait_for_job(two, job.id, timeout_s=120, sleep=time.sleep, clock=time.monotonic)
    assert failed.state == JobState.FAILED and failed.error.code == "worker_died"
    assert not pid_alive(rank_pids[0])  # all ranks stopped together
    assert two.can_restart(failed)

    def fresh_ranks() -> dict[int, int]:
        deadline = time.monotonic() + 240
        while True:
            try:
                pids = {rank: int((job_dir / f"rank-{rank}.pid").read_text()) for rank in (0, 1)}
                if not set(pids.values()) & set(rank_pids.values()) and two.get_job(job.id).provider_status == "running":
                    return pids
            except (FileNotFoundError, ValueError):
                pass
            assert time.monotonic() < deadline, (two._jobdir(job.id).raw_status(), (job_dir / "worker.log").read_text()[-2000:])
            time.sleep(0.2)

    def gone(pids) -> bool:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 30
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        return not any(pid_alive(p) for p in pids)

    # pause stops both ranks at one step boundary, resumable
    two.resume_job(job.id)
    rank_pids = fresh_ranks()
    two.pause_job(job.id)
    deadline = time.monotonic() + 120
    while two.get_job(job.id).state != JobState.PAUSED or two._jobdir(job.id).worker_holds_lock():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert gone(rank_pids.values())

    # kill -9 of the job's worker takes its ranks with it
    two.resume_job(job.id)
    rank_pids = fresh_ranks()
    os.kill(two._jobdir(job.id).worker_pid(), signal.SIGKILL)
    assert gone(rank_pids.values())
    assert poller.wait_for_job(two, job.id, timeout_s=120, sleep=time.sleep, clock=time.monotonic).error.code == "worker_died"

    two.resume_job(job.id)
    done = poller.wait_for_job(two, job.id, timeout_s=300, sleep=time.sleep, clock=time.monotonic)
    assert done.state == JobState.SUCCEEDED
    messages = [e.message for e in two.list_events(job.id, limit=1000)]
    assert any(m.startswith("Resumed from step-") for m in messages)
    assert (job_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_distributed_options_are_checked_before_a_job_exists(provider, tiny_model_dir: Path, training_file: Path) -> None:  # type: ignore[no-untyped-def]
    from local_backend.launch import torchrun_command
    from providers.local import LocalProvider

    spec = FineTuneSpec(provider="local", base_model=str(tiny_model_dir), training_file=training_file)
    for options in ({"num_processes": "two"}, {"num_processes": "0"}, {"nnodes": "2", "num_processes": "1"}, {"nnodes": "2", "node_rank": "2", "rdzv_endpoint": "h:1"}):
        bad = LocalProvider(options)
        with pytest.raises(errors.InvalidInput):
            bad.create_job(spec, training_file_id=bad.upload_file(training_file), validation_file_id=None, run_id="run-bad")
    assert provider.list_jobs() == []

    single_node = torchrun_command(Path("/j"), {"num_processes": 4, "nnodes": 1}, python="py")
    assert single_node == ["py", "-m", "torch.distributed.run", "--nproc_per_node", "4", "--max_restarts", "0", "--standalone",
                           "-m", "local_backend.launch", "--rank", "/j"]
    multi = torchrun_command(Path("/j"), {"num_processes": 8, "nnodes": 2, "node_rank": 1, "rdzv_endpoint": "10.0.0.5:29500"}, python="py")
    assert multi[multi.index("--nnodes") :][:8] == ["--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.5", "--master_port", "29500"]


def test_fsdp_shards_the_base_and_trains_the_same_adapter_as_one(provider, local_home: Path, tiny_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """-o fsdp=true: each rank holds half of the frozen base (FSDP2 over gloo), the LoRA
    parameters stay whole, and the adapter is the one-process adapter (same tolerance), also
    when the sharded run is paused after a checkpoint and resumed from it."""
    import torch

    from providers.local import LocalProvider

    # 9 rows: micro-batches of 4, 4 and 1 row, so rank 1's share of the last one is empty and
    # it must still run a (zero-weight) forward with rank 0, which gathers weights with it.
    train = write_training_file(tmp_path / "train.jsonl", count=9)
    spec = FineTuneSpec(provider="local", base_model=str(tiny_model_dir), training_file=train, seed=7,
                        # the chunked loss (CUDA's default) calls the decoder, the sharded root, and reads
                        # the output head's weight directly: that path is the one checked here
                        hyperparameters=fast_hyperparameters(epochs=4, checkpoint_every=2, loss_impl="chunked"))  # 12 steps
    single_job, single = _train(provider, spec, "run-one")
    sharded = LocalProvider({"num_processes": "2", "fsdp": "true"})
    fsdp_job = sharded.create_job(spec, training_file_id=sharded.upload_file(train), validation_file_id=None, run_id="run-fsdp")
    job_dir = sharded._jobdir(fsdp_job.id)
    log = job_dir.path.joinpath("worker.log")
    deadline = time.monotonic() + 240
    while not list((job_dir.path / "checkpoints").glob("step-*/trainer_state.pt")):  # the step-2 checkpoint
        assert time.monotonic() < deadline and sharded.get_job(fsdp_job.id).state not in (JobState.FAILED, JobState.SUCCEEDED), log.read_text()[-3000:]
        time.sleep(0.01)
    sharded.pause_job(fsdp_job.id)
    while sharded.get_job(fsdp_job.id).state != JobState.PAUSED or job_dir.worker_holds_lock():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    sharded.resume_job(fsdp_job.id)
    done = poller.wait_for_job(sharded, fsdp_job.id, timeout_s=300, sleep=time.sleep, clock=time.monotonic)
    assert single.state == done.state == JobState.SUCCEEDED, log.read_text()[-3000:]
    messages = [e.message for e in sharded.list_events(fsdp_job.id, limit=1000)]
    assert any(m.startswith("Resumed from step-") for m in messages)
    assert any(m.endswith("loss chunked") for m in messages)
    assert sharded._jobdir(fsdp_job.id).spec()["distributed"]["fsdp"] is True

    one_state, fsdp_state = _adapter(provider, single_job.id), _adapter(sharded, fsdp_job.id)
    assert one_state.keys() == fsdp_state.keys()  # LoRA weights only: no base weight was gathered into the adapter
    assert max(float(one_state[k].abs().max()) for k in one_state if "lora_B" in k) > 1000 * STATE_TOLERANCE
    for name, tensor in one_state.items():
        torch.testing.assert_close(fsdp_state[name], tensor, rtol=0, atol=STATE_TOLERANCE)
    assert single.trained_tokens == done.trained_tokens

    # What rank 0 reported after sharding: every rank stores half of the sharded weights
    # (FSDP pads each tensor's first dimension to a multiple of 2: a few rows at most).
    reports = [e.data["fsdp"] for e in sharded.list_events(fsdp_job.id, limit=1000) if "fsdp" in e.data]
    assert len(reports) == 2 and reports[0] == reports[1]  # once per attempt, by rank 0 only
    report = reports[0]
    assert report["world_size"] == 2 and len(report["local_sharded_bytes"]) == 2
    whole = report["sharded_bytes"]
    assert whole > 2 * report["replicated_bytes"]  # the decoder (layers, embeddings, norm) is most of the base
    for local in report["local_sharded_bytes"]:
        assert abs(local - whole / 2) <= 0.02 * whole
    base_bytes = whole + report["replicated_bytes"]
    assert max(report["local_sharded_bytes"]) + report["replicated_bytes"] < 0.65 * base_bytes


def test_fsdp_option_is_checked_before_a_job_exists(provider, tiny_model_dir: Path, training_file: Path) -> None:  # type: ignore[no-untyped-def]
    from cloudtune import registry
    from local_backend.launch import distributed_spec
    from providers.local import LocalProvider

    spec = FineTuneSpec(provider="local", base_model=str(tiny_model_dir), training_file=training_file)
    for options in ({"fsdp": "true"}, {"fsdp": "true", "num_processes": "1"}, {"fsdp": "maybe", "num_processes": "2"}):
        bad = LocalProvider(options)
        with pytest.raises(errors.InvalidInput, match="fsdp"):
            bad.create_job(spec, training_file_id=bad.upload_file(training_file), validation_file_id=None, run_id="run-bad")
    assert provider.list_jobs() == []
    registry.check_options("local", {"num_processes": "2", "fsdp": "true"})  # `-o fsdp=true` is a local option
    assert distributed_spec({"num_processes": 2, "fsdp": True})["fsdp"] is True  # a YAML boolean reads alike
    assert distributed_spec({"num_processes": "2"})["fsdp"] is False


def test_qlora_under_fsdp_stores_4bit_weights_in_bf16() -> None:
    """How the CUDA paths load a base that FSDP will shard (local_backend/recipe.py), and the
    4-bit config QLoRA + FSDP loads with; loading needs a GPU, which CI does not have, so the
    choices and the config are checked here, not a run."""
    import torch

    from local_backend.recipe import Recipe, load_options
    from local_backend.sources import bnb_4bit_config

    qlora = Recipe("cuda", use_4bit=True, gradient_checkpointing=True, optimizer="adamw_fused", description="")
    lora = Recipe("cuda", use_4bit=False, gradient_checkpointing=True, optimizer="adamw_fused", description="")
    assert load_options(qlora, shard_base=True) == {"dtype": torch.bfloat16, "quantize_4bit": True, "quant_storage": torch.bfloat16, "onto_gpu": True}
    assert load_options(qlora, shard_base=False)["quant_storage"] is None  # one GPU: bitsandbytes' default packing
    assert load_options(lora, shard_base=True) == {"dtype": torch.bfloat16, "onto_gpu": False}  # host memory, FSDP moves the shards
    assert load_options(lora, shard_base=False)["onto_gpu"] is True

    sharded = bnb_4bit_config(quant_storage=torch.bfloat16)
    assert sharded.bnb_4bit_quant_storage == torch.bfloat16  # a float dtype FSDP can shard
    assert (sharded.load_in_4bit, sharded.bnb_4bit_quant_type, sharded.bnb_4bit_use_double_quant) == (True, "nf4", True)
    assert sharded.bnb_4bit_compute_dtype == torch.bfloat16
    assert bnb_4bit_config().bnb_4bit_quant_storage == torch.uint8  # one device: bitsandbytes' default packing


def test_a_rank_leaves_without_finalizing_the_interpreter(tmp_path: Path) -> None:
    """A rank's exit skips the interpreter's teardown (where a torch process can abort, see
    launch._leave_without_finalizing) yet still says why it left and with which code."""
    import subprocess
    import sys

    script = ("import atexit, sys\n"
              "atexit.register(print, 'finalized', flush=True)\n"
              "from local_backend import launch\n"
              "sys.exit(launch.main(['--rank', sys.argv[1]]))\n")
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "no-such-job")], capture_output=True, text=True,
                          timeout=120, cwd=root, env=env)
    assert done.returncode == 1
    assert "Traceback" in done.stderr  # no torchrun rendezvous to join: the rank says why it left
    assert "finalized" not in done.stdout
