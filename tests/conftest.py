"""Settings shared by every test, set before any test module is imported; and which tests are
``slow`` (``pytest -m "not slow"`` is the quick subset, CI runs everything)."""

from __future__ import annotations

import pytest

from tests.support.testenv import pin_documented_day

pin_documented_day()

# Modules whose every test is end to end: a CLI or a whole pipeline against an emulator, local
# training and serving in their own processes. ``*_e2e.py`` modules are slow by their name;
# single tests elsewhere carry ``@pytest.mark.slow`` (fault-matrix rows, SmolLM2, benchmarks).
SLOW_MODULES = frozenset({
    "tests/azure/test_rft_cli.py",
    "tests/compare/test_compare_cli.py",
    "tests/compare/test_quickstart_report.py",
    "tests/compare/test_local_judge.py",
    "tests/local/test_cli_resume.py",
    "tests/local/test_contract.py",
    "tests/local/test_distributed.py",
    "tests/local/test_dpo.py",
    "tests/local/test_export.py",
    "tests/local/test_fsdp_qlora.py",
    "tests/local/test_multi_adapter.py",
    "tests/local/test_server.py",
    "tests/local/test_serving_lifecycle.py",
    "tests/local/test_streaming.py",
    "tests/local/test_trainer.py",
    "tests/local/test_worker.py",
    "tests/openai/test_samples.py",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        module = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        if module in SLOW_MODULES or module.endswith("_e2e.py"):
            item.add_marker(pytest.mark.slow)
