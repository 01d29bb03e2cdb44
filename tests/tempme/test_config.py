"""The preset table: each name says its method, backbone and frame count, and the method its schedule."""
import pytest

from tempme.config import LORA, PRESETS, ModelConfig

BACKBONE_KEYS = {"ViT-B-32": "b32", "ViT-B-16": "b16", "TempMe-Tiny": "tiny"}


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_preset_name_says_what_its_config_holds(name):
    config = PRESETS[name]
    method, backbone, frames = name.split("-")
    assert config.name == name
    assert BACKBONE_KEYS[config.backbone] == backbone and f"{config.frames}f" == frames
    assert (config.schedule == LORA) == (method == "lora")
    assert bool(config.schedule.clipme_layers) == (method == "tempme")


def test_a_preset_round_trips_through_its_dict():
    for config in PRESETS.values():
        assert ModelConfig.from_dict(config.to_dict()) == config
