"""The report's charts: a style per target that never repeats, loss on an epoch axis per provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.compare.charts import _short_labels, _x_axis, loss_curves_png, styles
from cloudtune.compare.report import Comparison
from cloudtune.compare.runfacts import RunFacts


@pytest.mark.parametrize("count", [1, 8, 10, 11, 25, 60])
def test_every_target_gets_its_own_style(count: int) -> None:
    found = styles(count)
    assert len(found) == count
    assert len({(str(colour), hatch) for colour, hatch in found}) == count
    assert count > 10 or found[0][0] == "#1f77b4"  # the usual first colour while ten suffice


def test_loss_is_drawn_against_epochs_or_the_fraction_of_training() -> None:
    known = RunFacts("r1", "openai", "m", "ft", "succeeded", epochs=3, total_steps=36,
                     train_curve=[(s, 1.0) for s in range(1, 37)])
    assert _x_axis(known) == (pytest.approx(3 / 36), "epoch")  # step 36 is epoch 3
    unknown = RunFacts("r2", "azure", "m", "ft", "succeeded", train_curve=[(s, 1.0) for s in range(1, 11)])
    assert _x_axis(unknown) == (pytest.approx(0.1), "fraction of training")


def test_legends_are_short_and_the_run_ids_go_to_the_caption(tmp_path: Path) -> None:
    runs = [RunFacts("20261125-aaaaaa", "openai", "m", "ft", "succeeded", train_curve=[(1, 2.0), (2, 1.0)]),
            RunFacts("20261125-bbbbbb", "openai", "m", "ft", "succeeded", train_curve=[(1, 2.0), (2, 1.5)]),
            RunFacts("20261125-cccccc", "local", "m", "ft", "succeeded", valid_curve=[(1, 2.0), (2, 1.0)])]
    assert _short_labels(runs) == {"20261125-aaaaaa": "openai #1", "20261125-bbbbbb": "openai #2",
                                   "20261125-cccccc": "local"}
    path = loss_curves_png(Comparison([], [], runs=runs), tmp_path / "loss.png")
    from PIL import Image

    width, _ = Image.open(path).size
    assert width >= 900  # one panel per provider: two panels side by side
