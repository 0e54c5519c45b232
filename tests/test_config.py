"""Config: the paper's file loads unchanged, overrides apply in order, bad values fail in one line."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from fastad.config import Config, format_config, from_dict, load_config, save_config, to_dict
from fastad.errors import UserError

from conftest import FIXTURES, REPO

SEED_CONFIG = FIXTURES / "seed_config" / "cifar100_config.yaml"


def test_seed_config_loads_unchanged():
    raw = yaml.safe_load(SEED_CONFIG.read_text())
    cfg = load_config(SEED_CONFIG)
    for section in ("distillation", "fast_ad"):
        for key, value in raw[section].items():
            got = getattr(getattr(cfg, section), key)
            want = float(value) if key == "xi" else value
            assert got == want, key
    assert cfg.fast_ad.xi == 1e-6  # PyYAML reads '1e-6' as a string; it must still become a float
    assert cfg.distillation.image_size == [32, 32]


@pytest.mark.parametrize("name", ["fashion_mnist.yaml", "cifar100_resnet34_resnet18.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "configs" / name)
    assert isinstance(cfg, Config)


def test_paper_defaults_stay_available():
    """The schema's fast_ad defaults are the paper's (section 4.1); the CIFAR config changes only the
    measured recipe keys, and its comment's flags restore the paper's recipe exactly."""
    from fastad.config.recipes import recipe_overrides
    from fastad.config.schema import FastADConfig

    paper = (1.5, 0.1, 0.4, 10.0, 1e-6, 1.0, 1000, "cadr", "all", 1.0, 1, False, "eps", 1.0, 1, 0.0, 0.1, False)
    key = lambda f: (f.lambda_max, f.eta, f.tau_ent, f.k_sigmoid, f.xi, f.gamma, f.T, f.guidance,  # noqa: E731
                     f.guide_classes, f.guided_fraction, f.grad_pool, f.view_augment, f.rule, f.bn_weight,
                     f.smooth_samples, f.smooth_sigma, f.x0_step, f.clip_x0)
    assert key(FastADConfig()) == paper
    path = REPO / "configs" / "cifar100_resnet34_resnet18.yaml"
    shipped = load_config(path).fast_ad
    # The CIFAR config ships the bench method x0-routed-smooth: applying the recipe changes nothing.
    assert shipped == load_config(path, recipe_overrides("x0-routed-smooth")).fast_ad
    assert (shipped.rule, shipped.guide_classes, shipped.smooth_samples) == ("x0", "uncovered", 4)
    # The paper's recipe, restored with the flags the config's comment gives.
    comment = [line for line in path.read_text().splitlines() if line.startswith("#   --set")]
    flags = " ".join(comment).replace("#", "").replace("\\", "").split()
    restored = load_config(path, [v for k, v in zip(flags[::2], flags[1::2]) if k == "--set"]).fast_ad
    assert key(restored) == paper and restored.ddim_steps == 50


def test_override_order(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("distillation:\n  lr: 0.2\n  epochs: 7\nrun:\n  seed: 3\n")
    cfg = load_config(p, ["distillation.lr=0.05", "data.train_range=[10, 20]"], {"run.seed": 9, "run.out": None})
    assert cfg.distillation.lr == 0.05 and cfg.distillation.epochs == 7
    assert cfg.run.seed == 9 and cfg.run.out is None
    assert cfg.data.train_range == [10, 20]


def test_round_trip(tmp_path):
    cfg = load_config(None, ["fast_ad.eta=0.3", "data.classes=[0, 1, 2]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)


def test_every_field_is_documented():
    text = format_config(Config())
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory()):
            assert f.metadata.get("help"), f"{section.name}.{f.name} has no help text"
    assert "lambda_max: 1.5  # maximum rectification strength" in text


@pytest.mark.parametrize(
    "sets, needle",
    [
        (["distillation.foo=1"], "unknown config key 'distillation.foo'; valid keys in 'distillation': teacher_arch"),
        (["nosuch.key=1"], "unknown config section 'nosuch'"),
        (["distillation.lr=abc"], "config key 'distillation.lr': got 'abc'; expected a float > 0"),
        (["distillation.epochs=2.5"], "config key 'distillation.epochs': got 2.5; expected an integer >= 1"),
        (["fast_ad.ddim_steps=0"], "config key 'fast_ad.ddim_steps': got 0; expected an integer >= 1"),
        (["fast_ad.eta=true"], "config key 'fast_ad.eta': got True"),
        (["teacher_training.schedule=linear"], "expected one of: cosine, step"),
        (["distillation.image_size=[32]"], "config key 'distillation.image_size': got [32]; expected a list of 2"),
        (["data.train_range=[9, 3]"], "start < stop"),
        (["distillation.milestones=[150, 100]"], "strictly increasing"),
        (["run.device=gpu"], "config key 'run.device': got 'gpu'"),
        (["distillation"], "expected section.key=value"),
    ],
)
def test_bad_values_name_key_value_and_allowed(sets, needle):
    with pytest.raises(UserError) as e:
        load_config(None, sets)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="config file '.*missing.yaml' not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("distillation: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="expected a mapping of sections"):
        load_config(bad)
