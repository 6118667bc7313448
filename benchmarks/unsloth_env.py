"""Unsloth's column in an environment of its own, small enough to carry to a bare CUDA machine.

Unsloth 2026.10.9 (the release of 2026-10-26) needs ``trl<=1.15``, ``transformers<=5.17`` and
``datasets<5``; this project needs ``trl>=1.16``. So Unsloth never shares our environment: its
recipe (benchmarks/_qlora_children.py, ``unsloth``) runs in a process of its own whose
``PYTHONPATH`` puts the folder installed from these wheels ahead of everything else (its trl
1.15 and datasets 4.8 shadow the carried trl 1.16 / datasets 5.2 there alone).

    python benchmarks/unsloth_env.py download   # where pip works: the pinned wheels into .unsloth_whl/
    python benchmarks/unsloth_env.py check      # CPU: install them into a temp folder and import Unsloth's CUDA path
    python benchmarks/unsloth_env.py size .whl .unsloth_whl   # the working tree + carried folders vs the 64 MiB limit

On the GPU machine (benchmarks/README.md has the whole command):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/unsloth_site .unsloth_whl/*.whl
    python3 -m benchmarks.gpu_check ... --unsloth-site /tmp/unsloth_site

What is in the set and why (each package's Requires-Dist read against the CUDA image's package
list, /work/.library/device/KINDS.md, 2026-11-17; ``check`` proves the import on CPU with every
module that image lacks made unimportable):

- ``unsloth`` with its ``studio/`` package removed: the library code is unchanged; ``studio/`` is
  its web UI (26 of the wheel's 28.6 MB: a JavaScript front end and a FastAPI back end) that
  neither ``import unsloth`` nor training imports, dropped to fit the 64 MiB carry limit.
- ``unsloth_zoo``, ``trl`` 1.15.0, ``datasets`` 4.8.5 (Unsloth: !=4.4.*, <5; trl 1.15: >=4.7;
  its dill <0.4.2 and multiprocess <0.70.20 accept the carried 0.4.1 / 0.70.19).
- ``torchao``: imported by ``import unsloth`` (unsloth_zoo's patches).
- ``cut_cross_entropy``: unsloth_zoo's fused loss where enabled (22 kB).
Left out, with the reason: ``xformers`` (optional: Unsloth falls back to PyTorch's SDPA when it
is missing, unsloth/models/_utils.py; its wheel alone is > 100 MB); ``tyro``, ``msgspec``,
``hf_transfer``, ``diffusers``, ``structlog``, ``json5``, ``nest-asyncio``, ``pydantic`` (the
CLI, vLLM, Hub downloads, diffusion models and the studio: none is imported on the path we run,
which ``check`` proves).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".unsloth_whl"
CPU_WHEELS = ROOT / ".unsloth_cpu_whl"  # only for `check` here: the image's versions of what our venv has newer
PINS = ["unsloth==2026.10.9", "unsloth_zoo==2026.10.9", "trl==1.15.0", "datasets==4.8.5", "torchao==0.18.0",
        "cut-cross-entropy==25.1.1"]
# The CUDA image's transformers / huggingface_hub (KINDS.md's pip list) and the http stack that hub
# version uses, which the image has and this venv lacks; never carried.
CPU_CHECK_PINS = ["transformers==5.17.0", "huggingface_hub==1.33.0", "httpx==0.28.1", "httpcore==1.0.9", "h11==0.16.0",
                  "anyio==4.11.0"]
DROPPED_PREFIXES = ("studio/",)
LIMIT_MIB = 64
PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            *[arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                              "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64", "any")
              for arg in ("--platform", tag)]]
# /work/.library/device/KINDS.md, "Python packages already there", read on 2026-11-17.
DEVICE_IMAGE = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub
humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping
jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex
requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()
# What the main wheel set (.whl, benchmarks/README.md) adds on that machine, below Unsloth's folder.
CARRIED = ["bitsandbytes", "liger-kernel", "dill", "multiprocess"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def strip_wheel(path: Path, prefixes: tuple[str, ...] = DROPPED_PREFIXES) -> int:
    """Rewrite a wheel without the entries under ``prefixes`` (and their RECORD lines); returns bytes saved."""
    before = path.stat().st_size
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            if info.filename.startswith(prefixes):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if not line.startswith(prefixes)).encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    tmp.replace(path)
    return before - path.stat().st_size


def download(dest: Path = WHEELS) -> None:
    dest.mkdir(exist_ok=True)
    _pip("download", "-q", "--no-deps", *PLATFORM, "-d", str(dest), *PINS)
    for wheel in dest.glob("unsloth-*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            if not any(n.startswith(DROPPED_PREFIXES) for n in zf.namelist()):
                continue
        saved = strip_wheel(wheel)
        print(f"{wheel.name}: studio/ (its web UI) removed, {saved / 1e6:.1f} MB less")
    wanted = {_norm(p.split("==")[0]) for p in PINS}
    for wheel in sorted(dest.glob("*.whl")):
        if _norm(wheel.name.split("-")[0]) not in wanted:
            print(f"not in the pinned set, removed: {wheel.name}")
            wheel.unlink()
    print(f"{dest}: {sum(w.stat().st_size for w in dest.glob('*.whl')) / 2**20:.1f} MiB in "
          f"{len(list(dest.glob('*.whl')))} wheels")


def tree_bytes(root: Path = ROOT) -> int:
    """What travels without `carry`: tracked files and untracked files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout.decode()
    return sum((root / name).stat().st_size for name in out.split("\0") if name and (root / name).is_file())


def path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def size(carry: list[str], root: Path = ROOT) -> int:
    """Print the working tree's and each carried path's size; 1 when the total exceeds the limit."""
    rows = [("working tree (tracked + untracked, not ignored)", tree_bytes(root))]
    rows += [(name, path_bytes(root / name)) for name in carry]
    total = sum(b for _, b in rows)
    for name, b in rows:
        print(f"{b / 2**20:8.2f} MiB  {name}")
    print(f"{total / 2**20:8.2f} MiB  total (limit {LIMIT_MIB} MiB, {LIMIT_MIB - total / 2**20:.2f} MiB to spare)")
    missing = [name for name in carry if not (root / name).exists()]
    if missing:
        print(f"missing: {', '.join(missing)}")
    return 1 if total > LIMIT_MIB * 2**20 or missing else 0


def _image_view(site_packages: Path, out: Path, skip: set[str]) -> list[str]:
    """Link into ``out`` the modules of ``site_packages`` that the CUDA image (or the main wheel set)
    also provides, except the distributions in ``skip``; returns the distributions left out."""
    import importlib.metadata as md

    allowed = {_norm(n) for n in DEVICE_IMAGE + CARRIED} - skip
    left_out = set()
    for dist in md.distributions(path=[str(site_packages)]):
        name = _norm(dist.metadata["Name"])
        if name not in allowed:
            left_out.add(name)
            continue
        info = Path(str(dist._path))  # type: ignore[attr-defined]
        _link(info, out / info.name)
        tops = (dist.read_text("top_level.txt") or "").split()
        if not tops:  # no top_level.txt: the first path component of each installed file
            tops = sorted({Path(str(f)).parts[0].split(".")[0] for f in (dist.files or [])
                           if not str(f).startswith(("..", info.name))})
        for top in tops:
            for candidate in site_packages.glob(f"{top}*"):
                stem = candidate.name.split(".")[0]
                if stem == top and not candidate.name.endswith((".dist-info", ".egg-info")):
                    _link(candidate, out / candidate.name)
    for libs in site_packages.glob("*.libs"):  # vendored shared libraries of compiled wheels
        _link(libs, out / libs.name)
    return sorted(left_out)


def _link(src: Path, dst: Path) -> None:
    if not dst.exists():
        dst.symlink_to(src)


CHECK_SCRIPT = r"""
import json, os, sys, time
began = time.time()
import unsloth  # the CUDA-shaped import path (UNSLOTH_ALLOW_CPU=1), as on the GPU machine
from unsloth import FastLanguageModel
import trl, datasets, transformers
assert trl.__version__ == "1.15.0", trl.__version__
assert datasets.__version__.startswith("4."), datasets.__version__
tops = sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")} - set(sys.stdlib_module_names))
print("RESULT " + json.dumps({"unsloth": unsloth.__version__, "trl": trl.__version__, "datasets": datasets.__version__,
      "transformers": transformers.__version__, "seconds": round(time.time() - began, 1),
      "device_type": getattr(unsloth, "DEVICE_TYPE", None), "top_level_modules": tops}))
"""


def _isolated(work: Path, dest: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """A Python prefix that sees Unsloth's folder, then the CUDA image's packages only (+ the main
    wheel set), as on the GPU machine: returns (sys.path head, environment, hidden distributions)."""
    import sysconfig

    wheels = sorted(str(w) for w in dest.glob("*.whl"))
    local = [w for w in wheels if "cp312" not in w or sys.version_info[:2] == (3, 12)]
    CPU_WHEELS.mkdir(exist_ok=True)
    _pip("download", "-q", "--no-deps", "-d", str(CPU_WHEELS), *CPU_CHECK_PINS)
    _pip("install", "-q", "--no-index", "--no-deps", "--no-compile", "--target", str(work / "unsloth_site"), *local)
    _pip("install", "-q", "--no-index", "--no-deps", "--no-compile", "--target", str(work / "image_extra"),
         *[str(w) for w in CPU_WHEELS.glob("*.whl")])
    view = work / "image"
    view.mkdir()
    # transformers / huggingface_hub: the image's versions (image_extra), not this venv's newer ones;
    # trl / datasets: Unsloth's own (unsloth_site), as on the GPU machine.
    left_out = _image_view(Path(sysconfig.get_paths()["purelib"]), view,
                           skip={"transformers", "huggingface-hub", "trl", "datasets", "httpx", "httpcore", "h11", "anyio"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "UNSLOTH"))}
    env.update(UNSLOTH_ALLOW_CPU="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", UNSLOTH_COMPILE_LOCATION=str(work / "compiled"), CUDA_VISIBLE_DEVICES="",
               TOKENIZERS_PARALLELISM="false")
    return [str(work / "unsloth_site"), str(work / "image_extra"), str(view)], env, left_out


def _run_isolated(path: list[str], env: dict[str, str], work: Path, code: str, timeout: float = 900) -> dict | str:
    result = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = {path!r}\n" + code], cwd=work,
                            env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        return f"exit {result.returncode}:\n{result.stdout[-1500:]}\n{result.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def check(dest: Path = WHEELS, train: bool = False) -> int:
    """Install the set into a temp folder and import Unsloth's CUDA path on CPU (UNSLOTH_ALLOW_CPU=1),
    seeing only what the CUDA image has (+ the main wheel set): a module Unsloth imports that the image
    lacks fails here. ``train``: then Unsloth's recipe itself (benchmarks/_qlora_children.py) on a tiny
    model on CPU, so its loading, LoRA and TRL wiring run too."""
    if not list(dest.glob("*.whl")):
        print(f"no wheels in {dest}: run `python benchmarks/unsloth_env.py download` first")
        return 1
    work = Path(tempfile.mkdtemp(prefix="unsloth-check-"))
    try:
        path, env, left_out = _isolated(work, dest)
        report = _run_isolated(path, env, work, CHECK_SCRIPT)
        if isinstance(report, str):
            print(f"import failed ({report})")
            return 1
        print(f"import unsloth OK with only the CUDA image's packages + the carried wheels visible "
              f"({len(left_out)} local distributions hidden, e.g. {', '.join(left_out[:8])}): "
              + json.dumps({k: v for k, v in report.items() if k != "top_level_modules"}))
        print("top-level modules imported: " + ", ".join(report["top_level_modules"]))
        if not train:
            return 0
        return _train_check(work, path, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _train_check(work: Path, path: list[str], env: dict[str, str]) -> int:
    sys.path.insert(0, str(ROOT))
    from benchmarks import local_qlora
    from local_backend.tiny import build_tiny_model

    model = work / "tiny"
    build_tiny_model(model, [" ".join(local_qlora.WORDS)], hidden_size=128, intermediate_size=256, layers=2)
    data = work / "data.jsonl"
    local_qlora.write_dataset(data, model, 128, 24, variable=True)
    settings = {"tiny": True, "seq_len": 128, "steps": 3, "batch_size": 2, "warmup": 1, "quantize": "none",
                "model": str(model), "data": str(data), "words": local_qlora.WORDS}
    child = ROOT / "benchmarks" / "_qlora_children.py"
    code = (f"sys.argv = [{str(child)!r}, 'unsloth', {json.dumps(settings)!r}]\n"
            f"import runpy; runpy.run_path({str(child)!r}, run_name='__main__')\n")
    # Unsloth's CPU backend (UNSLOTH_ALLOW_CPU off): its CUDA loader asks the device for its properties.
    result = _run_isolated(path, {k: v for k, v in env.items() if k != "UNSLOTH_ALLOW_CPU"}, work, code)
    if isinstance(result, str):
        print(f"Unsloth's recipe on CPU failed ({result})")
        return 1
    print("Unsloth's recipe ran on CPU (tiny Llama, fp32, 3 steps): "
          + json.dumps({k: result.get(k) for k in ("tokens_per_s", "measured_steps", "layout", "loss", "trl", "datasets",
                                                   "unsloth", "attention")}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("download", help="the pinned wheels into .unsloth_whl/ (unsloth's studio/ removed)")
    checks = sub.add_parser("check", help="CPU: install them into a temp folder and import Unsloth's CUDA path")
    checks.add_argument("--train", action="store_true", help="then run Unsloth's recipe on a tiny model on CPU")
    sizes = sub.add_parser("size", help="working tree + carried paths against the 64 MiB limit")
    sizes.add_argument("carry", nargs="*", default=[".whl", ".unsloth_whl"])
    args = parser.parse_args(argv)
    if args.command == "download":
        download()
        return 0
    if args.command == "check":
        return check(train=args.train)
    return size(args.carry)


if __name__ == "__main__":
    sys.exit(main())
