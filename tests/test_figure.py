"""The run report's figure: a PNG read back, of the size asked for, with the curves and bars drawn."""

import pytest

pytest.importorskip("matplotlib")

import numpy as np  # noqa: E402

from recipe_ft.runtime import figure, run_report  # noqa: E402

GIB = 2**30
TAB_BLUE, TAB_ORANGE, TAB_GREEN = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x2C, 0xA0, 0x2C)


def a_report(**changes):
    r = {
        "name": "quickstart", "method": "lora", "model": "tiny-llama", "status": "completed",
        "loss_curve": [{"step": s, "loss": 6.0 - s / 10, "learning_rate": 3e-3 * min(1, s / 5)}
                       for s in range(1, 41)],
        "measured": {"eval_curve": [{"step": 20, "eval_loss": 3.0}, {"step": 40, "eval_loss": 2.4}]},
        "evaluation": {"baseline_eval_loss": 6.2},
        "planned_vs_measured": {"peak_memory": {"planned_allocated_bytes": 3 * GIB, "measured_bytes": 2 * GIB,
                                                "measured_kind": "torch.cuda.max_memory_allocated", "note": None}},
    }
    r.update(changes)
    return r


def pixels(path):
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    return (image[..., :3] * 255).round().astype(int)


def share_of(rgb, color, tolerance=6):
    return float((np.abs(rgb - np.array(color)).max(axis=-1) <= tolerance).mean())


def test_the_figure_is_a_png_with_curves_learning_rate_and_memory_bars(tmp_path):
    path = tmp_path / "loss.png"
    figure.draw(a_report(), path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    rgb = pixels(path)
    assert rgb.shape == (400, 1300, 3)  # figsize 13 x 4 inches at 100 dpi
    assert share_of(rgb, (255, 255, 255)) < 0.95  # not blank
    assert share_of(rgb, TAB_BLUE) > 0.005  # training loss line and the planned bar
    assert share_of(rgb, TAB_ORANGE) > 0.005  # held-out loss line and the measured bar
    assert share_of(rgb, TAB_GREEN) > 0.0005  # learning rate
    assert share_of(rgb, (0, 0, 0), tolerance=60) > 0.003  # axes, ticks and labels (text is dark)


def test_the_memory_bars_are_to_scale(tmp_path):
    """The measured bar is twice the planned one when the measured peak is twice the plan's."""
    r = a_report(loss_curve=[{"step": 1, "loss": 1.0, "learning_rate": None}], measured={}, evaluation={})
    r["planned_vs_measured"]["peak_memory"].update(planned_allocated_bytes=GIB, measured_bytes=2 * GIB)
    path = tmp_path / "loss.png"
    figure.draw(r, path)
    rgb = pixels(path)[:, 1000:]  # the memory panel
    heights = []
    for color in (TAB_BLUE, TAB_ORANGE):
        rows = np.nonzero((np.abs(rgb - np.array(color)).max(axis=-1) <= 6).any(axis=1))[0]
        heights.append(rows.max() - rows.min() + 1)
    assert heights[1] / heights[0] == pytest.approx(2.0, rel=0.05)


def test_the_markdown_report_embeds_the_figure(tmp_path):
    r = a_report()
    r.update(resumed_from=None, data={}, seed=7, versions={"python": "3"},
             hashes={"recipe_sha256": "a" * 64, "plan_sha256": "b" * 64})
    pm = r["planned_vs_measured"]
    pm.update(tokens_per_second={"planned": 1.0, "measured": 1.0, "planned_on": "L4"},
              hours={"planned": 0.1, "measured": 0.1}, cost_usd={"planned": 1.0, "at_plan_price": 1.0})
    run_report.write(tmp_path, r)
    assert "](loss.png)" in (tmp_path / "run_report.md").read_text()
    assert pixels(tmp_path / "loss.png").shape == (400, 1300, 3)
