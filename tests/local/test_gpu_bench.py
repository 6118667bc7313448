"""The prepared GPU run's plumbing, on CPU: gpu_check's --plan (recipes in priority order, cut
from the end by the budget), a recipe whose option the trainer lacks is reported rather than
crashing, the Unsloth environment's wheel stripping and carry-size count, the FlashAttention-3
probe's answers, and what CI runs of the GPU check: the CPU checks and the whole benchmark flow on
a tiny model, in one process (--cpu --cpu-bench)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import _gpu_bench, unsloth_env  # noqa: E402

PRIORITY = ["trl_fast", "ours", "unsloth", "ours_previous", "ours_no_packing", "ours_fixed", "trl_fast_fixed"]


def _plan(*args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--plan", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


def _verdicts(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        words = line.split()
        if len(words) > 1 and words[1] in PRIORITY and words[0] in {"run", "run?", "cut", "skip"}:
            out[words[1]] = words[0]
    return out


def test_plan_lists_checks_and_recipes_in_priority_order_and_cuts_from_the_end(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "unsloth").mkdir(parents=True)
    (site / "unsloth" / "__init__.py").write_text("")
    lines = _plan("--budget", "520", "--unsloth-site", str(site))
    verdicts = _verdicts(lines)
    assert list(verdicts) == PRIORITY  # the order the budget cuts in
    assert any("FlashAttention-3" in line for line in lines) and any("host syncs" in line for line in lines)
    assert verdicts["trl_fast"] == verdicts["ours"] == "run"
    assert verdicts["trl_fast_fixed"] == "cut"
    short = _verdicts(_plan("--budget", "330", "--unsloth-site", str(site)))
    assert short["trl_fast"] == "run" and short["unsloth"] == "cut" and short["ours_no_packing"] == "cut"
    # without its environment the Unsloth column says why, and the others move up
    missing = _plan("--budget", "520", "--unsloth-site", str(tmp_path / "nothing"))
    assert _verdicts(missing)["unsloth"] == "skip"
    assert any("holds no unsloth package" in line for line in missing)


def test_cpu_plan_lists_the_cpu_checks_only() -> None:
    lines = _plan("--cpu")
    assert any("packed vs reference (phi3)" in line for line in lines)
    assert not _verdicts(lines) and not any("FlashAttention-3" in line for line in lines)


def test_unknown_trainer_option_is_reported_and_an_optional_one_is_dropped() -> None:
    result, error = _gpu_bench.child("ours", {"tiny": True, "options": {"no_such_option": 1}}, timeout=300)
    assert result is None and "option not available" in error and "no_such_option" in error
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _qlora_children

    kept = _qlora_children._options({"options": {"no_such_option": "none", "lora_kernel": "peft"},
                                     "optional_options": ["no_such_option", "lora_kernel"]})
    assert kept == {"lora_kernel": "peft"}  # a known option stays; an unknown optional one means its value anyway


def _wheel(path: Path) -> Path:
    wheel = path / "demo-1.0-py3-none-any.whl"
    files = {"demo/__init__.py": "VALUE = 1\n", "studio/app.py": "x = 1\n" * 2000, "studio/ui.js": "y\n" * 2000,
             "demo-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
             "demo-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},,\n" for name in files) + "demo-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr("demo-1.0.dist-info/RECORD", record)
    return wheel


def test_strip_wheel_drops_studio_and_pip_installs_the_rest(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    assert unsloth_env.strip_wheel(wheel) > 0
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        record = zf.read("demo-1.0.dist-info/RECORD").decode()
    assert "demo/__init__.py" in names and not [n for n in names if n.startswith("studio/")]
    assert "studio/" not in record and "demo/__init__.py" in record
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    assert (target / "demo" / "__init__.py").read_text() == "VALUE = 1\n" and not (target / "studio").exists()


def test_size_counts_the_tree_and_each_carried_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/carried/\n")
    (tmp_path / "code.py").write_bytes(b"x" * 1000)
    (tmp_path / "carried").mkdir()
    (tmp_path / "carried" / "a.whl").write_bytes(b"y" * 3 * 2**20)
    assert unsloth_env.size(["carried"], root=tmp_path) == 0
    out = capsys.readouterr().out
    assert "3.00 MiB  carried" in out and "total (limit 64 MiB" in out
    (tmp_path / "carried" / "big.whl").write_bytes(b"z" * 62 * 2**20)
    assert unsloth_env.size(["carried"], root=tmp_path) == 1  # over the limit
    assert unsloth_env.size(["absent"], root=tmp_path) == 1  # a carried path that is not there


def test_flash_attention_3_probe_says_why_not() -> None:
    import torch

    from local_backend import attention

    assert attention._try_fa3("cpu", torch, "auto") == "not used: no CUDA device"
    assert attention._try_fa3("cuda", torch, "off").startswith("not tried")

    def card(major: int, minor: int) -> types.SimpleNamespace:  # the CUDA device this machine lacks
        cuda = types.SimpleNamespace(is_available=lambda: True, get_device_capability=lambda: (major, minor))
        return types.SimpleNamespace(cuda=cuda, __version__=torch.__version__)

    try:
        from torch.nn.attention import list_flash_attention_impls
    except ImportError:
        assert attention._try_fa3("cuda", card(9, 0), "auto").startswith("not offered by torch")
        return
    if "FA3" in list_flash_attention_impls():
        assert "FA3 is for Hopper" in attention._try_fa3("cuda", card(8, 0), "auto")
        answer = attention._try_fa3("cuda", card(9, 0), "auto")
        # torch registers FA3 but its kernels are a separate build (flash_attn_interface), absent here
        assert answer.startswith("offered by torch") and "flash_attn_interface" in answer
        assert torch.nn.attention.current_flash_attention_impl() is None


@pytest.mark.slow  # about two minutes: tiny models built and trained by every recipe, then the CPU checks
def test_cpu_checks_and_the_benchmark_flow_on_a_tiny_model_pass_and_report(tmp_path: Path) -> None:
    """What CI runs of the prepared GPU check, in one process (one run of the CPU checks, not two):
    the checks a CPU can run (packed attention with sliding windows and soft-capping against
    transformers' reference, chunked loss, gradient accumulation, DPO's first loss, fused LoRA)
    pass, the benchmark's flow works on a tiny model, and both reports are written."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--cpu", "--cpu-bench", "--recipes", "ours,unsloth,ours_previous",
         "--out", str(tmp_path), "--unsloth-site", str(tmp_path / "no-unsloth")],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    statuses = {entry["name"]: entry["status"] for entry in report["checks"]}
    assert statuses and set(statuses.values()) == {"ok"}, statuses
    assert {"packed vs reference (phi3)", "packed vs reference (mistral)", "packed vs reference (gemma2)",
            "chunked loss vs plain cross-entropy", "fused LoRA vs PEFT (CPU: Linear, NF4)"} <= set(statuses)
    gemma = next(e for e in report["checks"] if e["name"] == "packed vs reference (gemma2)")["figures"]
    assert gemma["attn_softcap"] and gemma["sliding_window"] < gemma["longest"]
    assert report["mode"] == "cpu" and report["failed"] == []
    bench = report["benchmark"]
    assert set(bench["results"]) == {"ours", "ours_previous"}
    assert bench["results"]["ours_previous"]["options_applied"].get("lora_kernel") == "peft"
    assert all(r["tokens_per_s"] > 0 and r["measured_steps"] >= 1 for r in bench["results"].values())
    assert "holds no unsloth package" in bench["missing"]["unsloth"]
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert markdown.startswith("# gpu_check") and "| packed vs reference (gemma2) | ok |" in markdown
    assert "| ours: ours, CUDA defaults |" in markdown and "unsloth missing" in markdown


def test_the_benchmark_model_is_written_on_the_cpu_without_initialisers(tmp_path: Path) -> None:
    """gpu_check writes the random model on the CPU while its CUDA checks run: norms 1, the rest
    N(0, 0.02)-like, in bf16, loadable by transformers (a small shape here; the real one is 3.8B)."""
    import os

    from safetensors import safe_open

    settings = {"tiny": False, "model": str(tmp_path / "model"), "words": ["ahoy", "matey", "gold"], "arch": "llama",
                "shape": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                          "num_key_value_heads": 4, "vocab_size": 512}}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    result, error = _gpu_bench.child("build", settings, timeout=300, env=env)
    assert error is None and result["layers"] == 2 and result["hidden"] == 128
    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as weights:
        norm = weights.get_tensor("model.norm.weight")
        proj = weights.get_tensor("model.layers.1.mlp.down_proj.weight").float()
    assert norm.dtype.is_floating_point and bool((norm == 1).all())
    assert abs(proj.std().item() - 0.02) < 0.002 and not bool((proj[0] == proj[1]).all())
