"""Training configs: YAML + dotted overrides, types checked, bad settings named by key."""

import pytest

from pipelines.train.config import CONFIGS, ConfigError, check_config, config_from_dict, load_config


def test_shipped_configs_load_with_the_papers_recipe():
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert {"msrvtt-tempme-b32", "msrvtt-tempme-b16", "msrvtt-lora-b32", "msrvtt-tome-b32", "tiny"} <= names
    for path in CONFIGS.glob("*.yaml"):
        cfg = load_config(path)
        check_config(cfg)
        if path.stem.startswith("msrvtt"):
            assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_ratio, cfg.optim.grad_clip) == \
                   (6e-4, 0.2, 0.1, 1.0)
            assert (cfg.train.epochs, cfg.train.batch_size) == (5, 128)
    b16 = load_config(CONFIGS / "msrvtt-tome-b16.yaml")      # extends tempme-b16, which extends tempme-b32
    assert b16.model.preset == "tome-b16-12f" and b16.train.eval_batch_size == 16 and b16.optim.lr == 6e-4


def test_overrides_are_typed_and_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "tiny.yaml", ["optim.lr=3e-4", "train.max_steps=7", "data.eval_split=null",
                                              "scaling.use_gpu=false", "run.name=abc"])
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.max_steps == 7 and cfg.data.eval_split is None and cfg.run.name == "abc"
    assert config_from_dict(cfg.to_dict()) == cfg
    assert cfg.flat()["optim.lr"] == 3e-4


@pytest.mark.parametrize("overrides, key", [
    (["optim.lr=abc"], "optim.lr"),
    (["optim.lrr=1"], "optim.lrr"),
    (["train.batch_size=1.5"], "train.batch_size"),
    (["scaling.use_gpu=maybe"], "scaling.use_gpu"),
    (["nosection.x=1"], "nosection"),
    (["lr"], "lr"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "tiny.yaml", overrides)
    assert err.value.key == key and str(err.value).startswith(key)


@pytest.mark.parametrize("overrides, key, words", [
    (["model.preset=tempme-huge-12f"], "model.preset", "unknown preset"),
    (["train.batch_size=10", "scaling.num_workers=3"], "train.batch_size", "not divisible"),
    (["optim.lr=0"], "optim.lr", "> 0"),
    (["train.precision=fp8"], "train.precision", "fp8"),
    (["data.shards=''"], "data.shards", "required"),
    (["data.select_on_test=false"], "data.eval_split", "select_on_test"),
])
def test_settings_that_cannot_run_name_the_key(overrides, key, words):
    cfg = load_config(CONFIGS / "tiny.yaml", overrides)
    with pytest.raises(ConfigError, match=words) as err:
        check_config(cfg)
    assert err.value.key == key


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="circle"):
        load_config(tmp_path / "a.yaml")


def test_a_shipped_recipe_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("msrvtt-tempme-b32") == load_config(CONFIGS / "msrvtt-tempme-b32.yaml")
    assert load_config("tiny.yaml") == load_config(CONFIGS / "tiny.yaml")
    with pytest.raises(ConfigError, match="no such file"):
        load_config("msrvtt-tempme-b99")
