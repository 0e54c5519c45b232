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
    """The sections' defaults are the paper's (section 4.1): CADR with the eps rule on every image, plain DDIM."""
    from fastad.diffusion import SamplerConfig
    from fastad.guidance import FastADConfig, GuidanceConfig
    from fastad.guidance.routing import RoutingConfig

    f = FastADConfig()
    assert (f.lambda_max, f.eta, f.tau_ent, f.k_sigmoid, f.ddim_steps, f.xi, f.gamma, f.T) == \
        (1.5, 0.1, 0.4, 10.0, 50, 1e-6, 1.0, 1000)
    assert (f.guidance, f.grad_mode, f.beta_adv) == ("cadr", "tweedie", 0.0)
    g = GuidanceConfig()
    assert (g.rule, g.bn_weight, g.grad_pool, g.smooth_samples, g.smooth_sigma) == ("eps", 1.0, 1, 1, 0.0)
    assert RoutingConfig() == RoutingConfig(guide_classes="all", guided_fraction=1.0)
    assert (SamplerConfig().ddim_eta, SamplerConfig().clip_x0, SamplerConfig().spacing) == (0.0, False, "leading")


def _synthesis(cfg: Config) -> dict:
    """Everything the synthesis reads: the synthesis sections whole, the synthesizer, and fast_ad but for the
    run-size and data keys (ddim_steps, tau_ent, T)."""
    fast_ad = {k: v for k, v in dataclasses.asdict(cfg.fast_ad).items() if k not in ("ddim_steps", "tau_ent", "T")}
    di = {k: v for k, v in dataclasses.asdict(cfg.deepinversion).items() if k != "iterations"}
    return {"synthesizer": cfg.distillation.synthesizer, "fast_ad": fast_ad, "deepinversion": di,
            **{s: dataclasses.asdict(getattr(cfg, s)) for s in ("sampler", "guidance", "routing")}}


@pytest.mark.parametrize("name", sorted(__import__("fastad.config.recipes", fromlist=["RECIPES"]).RECIPES))
def test_recipe_is_the_same_synthesis_on_every_config(name, tmp_path):
    """A recipe is a complete synthesis spec: on the embedded default, the CIFAR-100 config, the paper's own file
    and a config that sets every synthesis key to something else, --recipe NAME gives the same synthesis."""
    from fastad.config.recipes import recipe_sets

    odd = tmp_path / "odd.yaml"
    odd.write_text("fast_ad: {guidance: fixed, lambda_max: 0.7, eta: 0.9, grad_mode: full, beta_adv: 0.5}\n"
                   "sampler: {ddim_eta: 0.5, spacing: trailing, clip_x0: true, final_abar: first, steps_offset: 1}\n"
                   "guidance: {x0_step: 0.9, bn_weight: 3.0, grad_pool: 2, smooth_samples: 3, smooth_sigma: 0.2}\n"
                   "routing: {guide_classes: uncovered, guided_fraction: 0.25}\n"
                   "distillation: {synthesizer: deepinversion}\ndeepinversion: {lr: 0.3, tv_l2: 1.0, l2: 1.0}\n")
    configs = [REPO / "configs" / "fashion_mnist.yaml", REPO / "configs" / "cifar100_resnet34_resnet18.yaml",
               SEED_CONFIG, odd]
    specs = [_synthesis(load_config(c, recipe_sets(name))) for c in configs]
    assert all(s == specs[0] for s in specs[1:])


def test_recipes_reproduce_the_shipped_configs_and_the_paper():
    """--recipe cadr on the CIFAR-100 config is exactly the paper's settings; the shipped configs are recipes."""
    from fastad.config.recipes import RECIPES, SYNTHESIS_KEYS, recipe_sets

    cifar = REPO / "configs" / "cifar100_resnet34_resnet18.yaml"
    paper = load_config(cifar, recipe_sets("cadr"))
    assert _synthesis(paper) == _synthesis(Config())  # the sections' defaults are the paper's
    assert paper.fast_ad == load_config(SEED_CONFIG).fast_ad  # and the authors' own file says the same
    assert _synthesis(load_config(cifar)) == _synthesis(load_config(cifar, recipe_sets("x0-routed-smooth")))
    fmnist = REPO / "configs" / "fashion_mnist.yaml"
    assert _synthesis(load_config(fmnist)) == _synthesis(load_config(fmnist, recipe_sets("none")))
    for name, changes in RECIPES.items():  # a recipe names only synthesis keys
        assert set(changes) <= set(SYNTHESIS_KEYS), name
    with pytest.raises(UserError, match="--recipe: got 'nope'; choose one of none, "):
        recipe_sets("nope")


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


def test_sections_validate_themselves():
    """A section built in Python is checked like one read from YAML."""
    from fastad.guidance import GuidanceConfig

    with pytest.raises(UserError, match="config key 'guidance.grad_pool': got 0; expected an integer >= 1"):
        GuidanceConfig(grad_pool=0)
    assert GuidanceConfig(smooth_sigma=1).smooth_sigma == 1.0 and isinstance(GuidanceConfig(smooth_sigma=1).smooth_sigma,
                                                                             float)


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
        (["sampler.spacing=middle"], "config key 'sampler.spacing': got 'middle'; expected one of: leading"),
        (["routing.guided_fraction=1.5"], "config key 'routing.guided_fraction': got 1.5; expected a float >= 0 and <= 1"),
        (["fast_ad.clip_x0=true"], "unknown config key 'fast_ad.clip_x0'; did you mean 'sampler.clip_x0'? valid keys in "
                                   "'fast_ad': lambda_max"),
        (["guidance.rule=x0", "fast_ad.grad_mode=full"], "config key 'fast_ad.grad_mode': got 'full'"),
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
