"""Merge schedules: the formulas, and the paper's table reproduced by running the real-size models."""
import re
from pathlib import Path

import pytest

import tempme
from tempme.config import MergeSchedule
from tempme.flops import complexity_report
from tempme.layer_plan import plan_layers

PAPER = Path(__file__).resolve().parents[2].parent / "shared" / "PAPER.md"

# preset -> (GMACs, tokens per sequence entering each layer's attention ... , final tokens), from PAPER.md
EXPECTED = {
    "tempme-b32-12f": (34.84, "1x97"), "tempme-b16-12f": (121.7, "1x127"), "tempme-b32-64f": (186.9, "1x500"),
    "tome-b32-12f": (40.27, "12x26"), "tome-b16-12f": (144.6, "12x77"), "tome-b32-64f": (214.8, "64x26"),
    "lora-b32-12f": (53.08, "12x50"), "lora-b16-12f": (211.5, "12x197"), "lora-b32-64f": (283.1, "64x50"),
}


def test_expected_figures_are_the_papers():
    """The table above is PAPER.md's merge-schedule table, not numbers made up here."""
    if not PAPER.exists():
        pytest.skip("shared/PAPER.md is not beside the checkout")
    text = PAPER.read_text()
    for gmacs, _ in EXPECTED.values():
        assert re.search(rf"\|\s*{re.escape(f'{gmacs:g}')}\s*\|", text), gmacs


def test_merge_counts_follow_the_formulas():
    s = MergeSchedule(imgme_r=2, clipme_layers=(8, 9, 10), clip_groups=(2, 2, 3), p_cross=0.3, p_intra=0.1)
    plans = plan_layers(s, 12, 12, 50)
    assert [p.r_after for p in plans[:8]] == [2] * 8
    n, c = 34, 1
    for layer, m in zip((8, 9, 10), (2, 2, 3)):
        r_c = min(int(m * n * 0.3), (n - c) * m // 2)
        r_i = min(int((m * n - r_c) * 0.1), ((n - c) * m - r_c) // 2)
        assert (plans[layer].r_cross, plans[layer].r_after) == (r_c, r_i)
        n, c = m * n - r_c - r_i, c * m
    assert plans[11].r_after == min(int(n * 0.1), (n - c) // 2)


def test_schedule_rejects_impossible_frame_counts():
    with pytest.raises(ValueError, match="cannot be joined"):
        tempme.get_config("tempme-b32-12f").replace(frames=10)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="tempme-b32-12f"):
        tempme.get_config("tempme-b64-12f")


@pytest.mark.parametrize("preset", list(EXPECTED))
def test_presets_reproduce_the_paper_table(preset):
    report = complexity_report(tempme.get_config(preset))
    gmacs, final = EXPECTED[preset]
    assert report["final_tokens"] == final
    assert abs(report["gmacs"] - gmacs) / gmacs < 0.005, report["gmacs"]
    plans = plan_layers(tempme.get_config(preset).schedule, 12, int(preset.split("-")[2][:-1]),
                        197 if "b16" in preset else 50)
    assert report["tokens_per_layer"] == [f"{p.seqs}x{p.tokens}" for p in plans]
    if preset == "tempme-b32-12f":
        assert report["tokens_per_layer"][8:] == ["6x48", "3x62", "1x118", "1x107"]
        assert report["trainable_params"] == 507_648
