"""Teacher guidance (docs/method.md, "One guided DDIM step" and "Beyond the paper").

The ``eps`` rule (CADR, steps 1-8, :func:`fastad.guidance.make_cadr_eps_fn`) and the ``x0`` rule
(:func:`fastad.guidance.preview_guided_sample`) by their invariants; the shared loss
(:class:`fastad.guidance.GuidanceLoss`): a hand-computed L_BN, reductions, hook hygiene, the
low-pass and smoothing options, non-finite handling; and the validation of the ``fast_ad`` and
``guidance`` config sections.
"""

from __future__ import annotations

import gc
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastad.data import make_view
from fastad.diffusion import ddim_sample, ddim_timesteps
from fastad.errors import UserError
from fastad.guidance import (
    BNStatsRecorder,
    bn_stat_term,
    FastADConfig,
    GuidanceConfig,
    GuidanceLoss,
    GuidanceStats,
    cadr_gate,
    entropy_nats,
    make_cadr_eps_fn,
    normalize_grad,
    pool_grad,
    preview_guided_sample,
    preview_step,
)
from fastad.models import create_model

ABAR = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)  # DDPM linear schedule
VIEW = make_view([0.5], [0.25])
B = 8
X0 = GuidanceConfig(rule="x0")

# options.coerce turns any int/float into a float without a finiteness check (only strings are
# checked), so NaN and +-inf pass every bound of a float option.


def _freeze(m: nn.Module) -> nn.Module:
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    """resnet8 (1 channel) fitted for 10 SGD steps on class-shifted noise: non-trivial BN statistics."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    m = create_model("resnet8", num_classes=10, in_channels=1)
    y = torch.randint(0, 10, (64,), generator=g)
    x = torch.randn(64, 1, 16, 16, generator=g) + (y.float() / 5 - 1).view(-1, 1, 1, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m.train()
    for _ in range(10):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return _freeze(m)


def _inputs(seed: int = 100):
    """x_t [B, 1, 16, 16], labels [B], and a deterministic eps_fn that depends on x_t."""
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(B, 1, 16, 16, generator=g)
    w = torch.randn(1, 1, 16, 16, generator=g)
    return x_t, torch.arange(B), (lambda x, t: 0.5 * x + 0.1 * w)


def _t(step: int, n: int = B) -> torch.Tensor:
    return torch.full((n,), step, dtype=torch.long)


def _preview(x_t: torch.Tensor, eps: torch.Tensor, step: int) -> torch.Tensor:
    a = ABAR[step].float()
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def _ce(teacher: nn.Module, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The teacher's per-sample CE towards ``y`` on prior-space images ``x0``."""
    with torch.no_grad():
        return F.cross_entropy(teacher(VIEW(x0)), y, reduction="none")


def _bn_hooks(m: nn.Module) -> list[int]:
    return [len(b._forward_pre_hooks) for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]


# --- gate, entropy, normalisation -------------------------------------------------------------


def test_gate_is_half_lambda_max_at_tau_and_fixed_is_constant() -> None:
    cfg = FastADConfig(lambda_max=1.5, tau_ent=0.4, k_sigmoid=10.0)
    lam = cadr_gate(torch.tensor([0.4, 0.0, 0.2, 1.0, 5.0]), cfg)
    assert lam[0].item() == pytest.approx(0.75, abs=1e-7)
    assert bool((lam[1:].diff() > 0).all()) and lam[-1].item() == pytest.approx(1.5, abs=1e-6)
    assert lam[1].item() == pytest.approx(1.5 / (1 + math.exp(4.0)), rel=1e-6)
    fixed = cadr_gate(torch.tensor([0.0, 0.4, 3.0]), FastADConfig(guidance="fixed"))
    assert torch.equal(fixed, torch.full((3,), 1.5))


def test_entropy_in_nats() -> None:
    H = entropy_nats(torch.tensor([[0.0] * 10, [100.0] + [0.0] * 9]))
    assert H[0].item() == pytest.approx(math.log(10), rel=1e-6)
    assert 0 <= H[1].item() < 1e-6


def test_normalized_gradients_have_unit_norm() -> None:
    g = torch.randn(5, 3, 4, 4) * torch.tensor([1e-4, 1e-2, 1.0, 1e2, 1e4]).view(5, 1, 1, 1)
    norms = normalize_grad(g, 1e-12).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(5), atol=1e-5, rtol=0)


def test_rectification_norm_is_lam_eta_xnorm(teacher: nn.Module) -> None:
    """End to end: ||eps_tilde - eps|| = sqrt(1 - abar_t) * lam * eta * ||x_t|| per sample (unit g_hat)."""
    x_t, y, eps_fn = _inputs()
    cfg = FastADConfig(guidance="fixed", lambda_max=1.2, eta=0.1, xi=1e-12)
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, cfg, view=VIEW) as guided:
        delta = guided(x_t, _t(400)) - eps_fn(x_t, _t(400))
    expected = (1 - ABAR[400]).sqrt().float() * 1.2 * 0.1 * x_t.flatten(1).norm(dim=1)
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), expected, rtol=1e-4, atol=0)


# --- invariants of the eps rule (CADR) --------------------------------------------------------


def test_lambda_max_zero_returns_eps_exactly(teacher: nn.Module) -> None:
    x_t, y, eps_fn = _inputs()
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, FastADConfig(lambda_max=0.0), view=VIEW) as guided:
        out = guided(x_t, _t(400))
    assert torch.equal(out, eps_fn(x_t, _t(400)))


def test_rectified_step_lowers_teacher_ce(teacher: nn.Module) -> None:
    """Eq. 8's sign: the rectified preview has lower CE; the seed code's sign (eps - ...) raises it."""
    x_t, y, eps_fn = _inputs()
    stats = GuidanceStats()
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, FastADConfig(), view=VIEW, stats=stats) as guided:
        eps_tilde = guided(x_t, _t(400))
    eps = eps_fn(x_t, _t(400))
    ce = [_ce(teacher, _preview(x_t, e, 400), y) for e in (eps, eps_tilde, 2 * eps - eps_tilde)]
    assert ce[1].mean() < ce[0].mean() < ce[2].mean()
    assert (ce[1] < ce[0]).float().mean() >= 0.75
    assert stats.steps[0]["ce"] == pytest.approx(ce[0].mean().item(), rel=1e-5)


def test_full_and_tweedie_agree_when_eps_ignores_x_t(teacher: nn.Module) -> None:
    x_t, y, eps_fn = _inputs()
    const = eps_fn(x_t, _t(0)).clone()
    outs = {}
    for mode in ("tweedie", "full"):
        with make_cadr_eps_fn(lambda x, t: const, teacher, y, ABAR, FastADConfig(grad_mode=mode), view=VIEW) as f:
            outs[mode] = f(x_t, _t(400))
    torch.testing.assert_close(outs["full"], outs["tweedie"], atol=1e-6, rtol=1e-5)
    # ... and "full" really differentiates through eps_fn when it mixes pixels of x_t.
    w = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    mixing = lambda x, t: 0.5 * torch.tanh(x * w).roll(3, dims=3)  # noqa: E731
    outs = {}
    for mode in ("tweedie", "full"):
        with make_cadr_eps_fn(mixing, teacher, y, ABAR, FastADConfig(grad_mode=mode), view=VIEW) as f:
            outs[mode] = f(x_t, _t(400))
    assert (outs["full"] - outs["tweedie"]).abs().max() > 1e-3


def test_bn_weight_zero_rectifies_along_the_ce_gradient_alone(teacher: nn.Module) -> None:
    x_t, y, eps_fn = _inputs()
    eps = eps_fn(x_t, _t(400))
    stats = GuidanceStats()
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, FastADConfig(guidance="fixed"),
                          guidance=GuidanceConfig(bn_weight=0.0), view=VIEW, stats=stats) as guided:
        assert set(_bn_hooks(teacher)) == {0}  # no L_BN, no statistics taken
        d_ce = guided(x_t, _t(400)) - eps
    assert stats.steps[0]["l_bn"] == 0.0
    # The direction is the normalised gradient of the CE alone, taken by hand.
    x0 = _preview(x_t, eps, 400).requires_grad_(True)
    ce = F.cross_entropy(teacher(VIEW(x0)), y, reduction="sum")
    (g,) = torch.autograd.grad(ce, x0)
    cos = F.cosine_similarity(d_ce.flatten(1), g.flatten(1), dim=1)
    assert bool((cos > 0.999).all())
    # With the BN term (the default) the direction is a different one.
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, FastADConfig(guidance="fixed"), view=VIEW) as guided:
        d_all = guided(x_t, _t(400)) - eps
    assert F.cosine_similarity(d_all.flatten(1), g.flatten(1), dim=1).min() < 0.999


# --- the shared loss: L_BN, reductions, hooks ---------------------------------------------------


def test_l_bn_matches_hand_computation() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.BatchNorm1d(3), nn.Linear(3, 4))
    for bn in (net[1], net[5]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    _freeze(net)
    x = torch.randn(6, 1, 7, 7)
    rec = BNStatsRecorder(net)
    with rec.record():
        net(x)
        l_bn = rec.loss()
    assert rec.terms == []
    h1 = net[0](x)
    h2 = net[4](net[3](net[2](net[1](h1))))

    def term(h: torch.Tensor, bn: nn.Module, dims: tuple[int, ...]) -> torch.Tensor:
        mu = h.mean(dims)
        var = ((h - mu.view(1, -1, *([1] * (h.ndim - 2)))) ** 2).mean(dims)  # biased batch variance
        return ((mu - bn.running_mean) ** 2).sum() + ((var - bn.running_var) ** 2).sum()

    expected = (term(h1, net[1], (0, 2, 3)) + term(h2, net[5], (0,))) / 2
    torch.testing.assert_close(l_bn, expected, rtol=1e-5, atol=1e-6)
    rec.remove()
    assert _bn_hooks(net) == [0, 0]


def test_l_bn_gradient_matches_autograd_of_the_formula() -> None:
    """bn_stat_term's closed-form backward against autograd through the formula (var_mean), per channel."""
    torch.manual_seed(0)
    for shape in ((6, 3, 5, 5), (7, 4)):
        x = (torch.randn(shape) * 2 + 0.5).requires_grad_(True)
        rm, rv = torch.randn(shape[1]), torch.rand(shape[1]) + 0.5
        (g,) = torch.autograd.grad(3.0 * bn_stat_term(x, rm, rv), x)
        dims = [0, *range(2, len(shape))]
        x2 = x.detach().clone().requires_grad_(True)
        var, mu = torch.var_mean(x2, dim=dims, correction=0)
        (expected,) = torch.autograd.grad(3.0 * ((mu - rm).pow(2).sum() + (var - rv).pow(2).sum()), x2)
        torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-6)
        xl = x.detach().to(memory_format=torch.channels_last) if len(shape) == 4 else x.detach()
        (gl,) = torch.autograd.grad(3.0 * bn_stat_term(xl.requires_grad_(True), rm, rv), xl)
        torch.testing.assert_close(gl, expected, rtol=1e-4, atol=1e-6)  # any memory layout


def test_loss_reductions(teacher: nn.Module) -> None:
    """L is reported with batch means and differentiated as B * L (docs: fastad.guidance.loss), so the CE part
    of sample i's gradient is that of CE_i alone, whatever the batch size."""
    x_t, y, eps_fn = _inputs()
    x0 = _preview(x_t, eps_fn(x_t, _t(400)), 400)
    rec = BNStatsRecorder(teacher)
    with torch.no_grad(), rec.record():
        ce = F.cross_entropy(teacher(VIEW(x0)), y, reduction="none")
        l_bn = rec.loss()
    rec.remove()
    cfg, guidance = FastADConfig(gamma=0.7), GuidanceConfig(bn_weight=0.5)
    with GuidanceLoss(teacher, y, cfg, guidance, view=VIEW) as loss, torch.no_grad():
        total, parts = loss(x0)
    torch.testing.assert_close(parts["ce"], ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["l_bn"], 0.5 * l_bn, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, B * (0.5 * l_bn + 0.7 * ce.mean()), rtol=1e-5, atol=1e-5)
    # The statistics report L itself, with batch means.
    stats = GuidanceStats()
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, cfg, guidance=guidance, view=VIEW, stats=stats) as guided:
        guided(x_t, _t(400))
    assert stats.steps[0]["loss"] == pytest.approx((0.5 * l_bn + 0.7 * ce.mean()).item(), rel=1e-5)
    assert stats.steps[0]["l_bn"] == pytest.approx(0.5 * l_bn.item(), rel=1e-5)
    # Without the batch statistic, each sample's raw gradient is the same in a batch of 8 and of 4.
    grads = {}
    for n in (B, 4):
        with GuidanceLoss(teacher, y[:n], cfg, GuidanceConfig(bn_weight=0.0), view=VIEW) as loss:
            x = x0[:n].clone().requires_grad_(True)
            (grads[n],) = torch.autograd.grad(loss(x)[0], x)
    assert grads[4].abs().max() > 0
    torch.testing.assert_close(grads[B][:4], grads[4], rtol=1e-4, atol=1e-6)


def test_compiled_teacher_gives_the_eager_guidance() -> None:
    """``distillation.compile`` hands guidance ``torch.compile(teacher, dynamic=True)``: L_BN's hooks are traced
    with it, so successive guidance losses (new hooks each, another batch size) give the eager loss, L_BN and
    gradient, and leave no hook behind. A small teacher with two BatchNorm layers keeps the compile short."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                            nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    for bn in (teacher[1], teacher[4]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    _freeze(teacher)
    compiled = torch.compile(teacher, dynamic=True)
    x_t, y, eps_fn = _inputs()
    x0 = _preview(x_t, eps_fn(x_t, _t(400)), 400)
    cfg, guidance = FastADConfig(), GuidanceConfig(bn_weight=0.5)
    for n in (B, 5):
        out = {}
        for name, model in (("eager", teacher), ("compiled", compiled)):
            with GuidanceLoss(model, y[:n], cfg, guidance, view=VIEW) as loss:
                x = x0[:n].clone().requires_grad_(True)
                total, parts = loss(x)
                (grad,) = torch.autograd.grad(total, x)
                out[name] = (total.detach(), parts["l_bn"].detach(), grad)
        assert out["compiled"][1] > 0 and out["compiled"][2].abs().max() > 0
        for want, got in zip(out["eager"], out["compiled"]):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert set(_bn_hooks(teacher)) == {0}


def test_hooks_registered_once_and_record_only_during_guidance(teacher: nn.Module) -> None:
    x_t, y, eps_fn = _inputs()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert set(_bn_hooks(teacher)) == {0}
    stats = GuidanceStats()
    guided = make_cadr_eps_fn(eps_fn, teacher, y, ABAR, FastADConfig(), view=VIEW, stats=stats)
    assert set(_bn_hooks(teacher)) == {1}
    for step in (600, 400, 200, 0):
        guided(x_t, _t(step))
        assert set(_bn_hooks(teacher)) == {1} and guided.loss.bn.terms == []
    teacher(torch.randn(4, 1, 16, 16, requires_grad=True)).sum().backward()  # a normal use of the teacher
    assert guided.loss.bn.terms == []
    assert len(stats.steps) == 4 and stats.summary()["steps"] == 4
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # params + running stats
    guided.close()
    guided.close()  # idempotent
    assert set(_bn_hooks(teacher)) == {0}
    with pytest.raises(RuntimeError, match="closed"):
        guided(x_t, _t(0))
    # A wrapper that is never closed still removes its hooks when collected.
    make_cadr_eps_fn(eps_fn, teacher, y, ABAR, FastADConfig(), view=VIEW)(x_t, _t(10))
    gc.collect()
    assert set(_bn_hooks(teacher)) == {0}
    # The x0 rule's sampler removes its hooks on return, and when the prior fails mid-way.
    preview_guided_sample(eps_fn, teacher, y, x_t, ABAR, ddim_timesteps(1000, 2), FastADConfig(), X0, view=VIEW)
    assert set(_bn_hooks(teacher)) == {0}

    def failing(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if int(t[0]) < 500:
            raise ValueError("prior failed")
        return eps_fn(x, t)

    with pytest.raises(ValueError, match="prior failed"):
        preview_guided_sample(failing, teacher, y, x_t, ABAR, ddim_timesteps(1000, 2), FastADConfig(), X0, view=VIEW)
    assert set(_bn_hooks(teacher)) == {0}
    assert all(p.grad is None for p in teacher.parameters())


class _NaNForFirstSample(nn.Module):
    """A BN-free toy teacher whose logits (and so gradient) are NaN for sample 0 only."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bad = torch.zeros(x.shape[0], 1)
        bad[0] = float("nan")
        return self.fc(x.flatten(1)) + bad


@pytest.mark.parametrize("rule", ["eps", "x0"])
def test_nonfinite_sample_is_left_unguided_and_counted(rule: str) -> None:
    torch.manual_seed(0)
    x_t, y, eps_fn = _inputs()
    eps = eps_fn(x_t, _t(400))
    nan_teacher = _freeze(_NaNForFirstSample())
    stats = GuidanceStats()
    if rule == "eps":
        with make_cadr_eps_fn(eps_fn, nan_teacher, y, ABAR, FastADConfig(guidance="fixed"),
                              view=VIEW, stats=stats) as guided:
            out, ref = guided(x_t, _t(400)), eps
    else:
        ref = _preview(x_t, eps, 400)
        with GuidanceLoss(nan_teacher, y, FastADConfig(guidance="fixed"), X0, view=VIEW, stats=stats) as loss:
            out = preview_step(loss, x_t, _t(400), ref)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], ref[0])
    assert bool(((out[1:] - ref[1:]).flatten(1).abs().amax(1) > 0).all())
    assert stats.steps[0]["nonfinite"] == 1 and stats.summary()["nonfinite"] == 1
    assert math.isfinite(stats.steps[0]["grad_norm"])  # the mean over the finite samples only


# --- adversarial term, config, errors, view, sampler integration --------------------------------


def test_beta_adv_leaves_student_and_teacher_grads_alone(teacher: nn.Module) -> None:
    x_t, y, eps_fn = _inputs()
    torch.manual_seed(1)
    student = create_model("resnet8", num_classes=10, in_channels=1).train()
    with pytest.raises(UserError, match="beta_adv"):
        make_cadr_eps_fn(eps_fn, teacher, y, ABAR, FastADConfig(beta_adv=1.0), view=VIEW)
    assert set(_bn_hooks(teacher)) == {0}
    stats = GuidanceStats()
    running = student.bn1.running_mean.clone()
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, FastADConfig(beta_adv=1.0), view=VIEW, student=student,
                          stats=stats) as f:
        adv = f(x_t, _t(400))
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, FastADConfig(), view=VIEW) as f:
        plain = f(x_t, _t(400))
    assert torch.isfinite(adv).all() and (adv - plain).abs().max() > 1e-4
    assert stats.steps[0]["l_adv"] < 0  # minus a KL divergence
    assert all(p.grad is None for p in student.parameters()) and all(p.grad is None for p in teacher.parameters())
    assert student.training and torch.equal(student.bn1.running_mean, running)


def test_config_defaults_are_the_papers() -> None:
    cfg, guidance = FastADConfig(), GuidanceConfig()
    assert (cfg.lambda_max, cfg.eta, cfg.tau_ent, cfg.k_sigmoid, cfg.ddim_steps, cfg.xi, cfg.gamma, cfg.T) == \
        (1.5, 0.1, 0.4, 10.0, 50, 1e-6, 1.0, 1000)
    assert (cfg.guidance, cfg.grad_mode, cfg.beta_adv) == ("cadr", "tweedie", 0.0)
    assert (guidance.rule, guidance.bn_weight, guidance.grad_pool, guidance.smooth_samples,
            guidance.smooth_sigma) == ("eps", 1.0, 1, 1, 0.0)
    # YAML reads '1e-6' as a string; a float option takes it.
    assert FastADConfig(xi="1e-6").xi == 1e-6 and isinstance(FastADConfig(gamma=2).gamma, float)


@pytest.mark.parametrize("field,value", [
    ("lambda_max", -1.0), ("tau_ent", -0.1), ("xi", 0.0), ("gamma", -2), ("beta_adv", -1e-3), ("eta", "fast"),
    ("gamma", True), ("k_sigmoid", None), ("ddim_steps", 0), ("ddim_steps", 2.5), ("T", 0), ("grad_mode", "exact"),
    ("guidance", "target"), ("guidance", "gate"),
    ("eta", float("nan")),
    ("k_sigmoid", float("inf")),
])
def test_bad_fast_ad_values_raise_user_error(field: str, value: object) -> None:
    with pytest.raises(UserError, match=f"config key 'fast_ad.{field}': got") as e:
        FastADConfig(**{field: value})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("field,value", [
    ("rule", "dps"), ("rule", "target"), ("x0_step", -0.1), ("bn_weight", -1.0), ("grad_pool", 0),
    ("grad_pool", 2.5), ("smooth_samples", 0), ("smooth_samples", True), ("smooth_sigma", -0.1),
    ("smooth_sigma", float("inf")),
])
def test_bad_guidance_values_raise_user_error(field: str, value: object) -> None:
    with pytest.raises(UserError, match=f"config key 'guidance.{field}': got") as e:
        GuidanceConfig(**{field: value})
    assert "\n" not in str(e.value)


def test_each_rule_refuses_the_other(teacher: nn.Module) -> None:
    """make_cadr_eps_fn is rule 'eps'; preview_guided_sample is rule 'x0' and differentiates at the preview."""
    x_t, y, eps_fn = _inputs()
    ts = ddim_timesteps(1000, 2)
    with pytest.raises(UserError, match="guidance.rule"):
        make_cadr_eps_fn(eps_fn, teacher, y, ABAR, FastADConfig(), guidance=X0, view=VIEW)
    with pytest.raises(UserError, match="guidance.rule"):
        preview_guided_sample(eps_fn, teacher, y, x_t, ABAR, ts, FastADConfig(), GuidanceConfig(), view=VIEW)
    with pytest.raises(UserError, match="fast_ad.grad_mode"):
        preview_guided_sample(eps_fn, teacher, y, x_t, ABAR, ts, FastADConfig(grad_mode="full"), X0, view=VIEW)
    assert set(_bn_hooks(teacher)) == {0}


def test_bad_call_inputs_raise_user_error(teacher: nn.Module) -> None:
    x_t, y, eps_fn = _inputs()
    with make_cadr_eps_fn(eps_fn, teacher, y[:4], ABAR, FastADConfig(), view=VIEW) as f:
        with pytest.raises(UserError, match="len\\(labels\\)"):
            f(x_t, _t(0))
    with pytest.raises(UserError, match="labels"):
        make_cadr_eps_fn(eps_fn, teacher, y.float(), ABAR, FastADConfig(), view=VIEW)
    with make_cadr_eps_fn(eps_fn, teacher, y + 5, ABAR, FastADConfig(), view=VIEW) as f:
        with pytest.raises(UserError, match="labels must lie in \\[0, 10\\)"):
            f(x_t, _t(0))
    with pytest.raises(UserError, match="FastADConfig"):
        make_cadr_eps_fn(eps_fn, teacher, y, ABAR, {"lambda_max": 1.5}, view=VIEW)
    with pytest.raises(UserError, match="alphas_cumprod"):
        make_cadr_eps_fn(eps_fn, teacher, y, torch.zeros(1000), FastADConfig(), view=VIEW)
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, FastADConfig(), view=VIEW) as f:
        with pytest.raises(UserError, match="LongTensor"):
            f(x_t, torch.tensor(5))
        teacher.train()
        try:
            with pytest.raises(UserError, match="eval"):
                f(x_t, _t(0))
        finally:
            teacher.eval()
    gc.collect()
    assert set(_bn_hooks(teacher)) == {0}


def test_view_formula_and_differentiable_augmentation() -> None:
    x = torch.rand(3, 2, 6, 6) * 2 - 1
    plain = make_view([0.1, 0.2], [0.5, 0.25])(x)
    torch.testing.assert_close(plain[:, 1], ((x[:, 1] + 1) / 2 - 0.2) / 0.25)
    x.requires_grad_(True)
    aug = make_view([0.1, 0.2], [0.5, 0.25], crop_padding=2, flip=True, generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad((aug(x) ** 2).sum(), x)
    assert g.abs().sum() > 0 and torch.isfinite(g).all()
    with pytest.raises(UserError, match="std"):
        make_view([0.5], [0.0])
    with pytest.raises(UserError, match="\\[B, 1"):
        make_view([0.5], [0.5])(x)


def test_with_ddim_sample_and_stats_summary(teacher: nn.Module) -> None:
    x_t, y, eps_fn = _inputs()
    stats = GuidanceStats()
    ts = ddim_timesteps(1000, 3)
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, FastADConfig(), view=VIEW, stats=stats) as guided:
        x0 = ddim_sample(guided, x_t, ABAR, ts)  # runs under no_grad: the wrapper opens its own grad
    assert x0.shape == x_t.shape and torch.isfinite(x0).all() and not x0.requires_grad
    s = stats.summary()
    assert s["steps"] == 3 and [r["t"] for r in stats.steps] == ts.tolist()
    assert {"gate_mean", "entropy_mean", "loss", "ce", "l_bn", "nonfinite", "preview_acc", "preview_acc_last"} <= set(s)
    assert 0 < s["gate_mean"] <= 1.5 and s["l_bn"] > 0 and s["loss"] > s["ce"]
    stats.reset()
    assert stats.summary() == {"steps": 0}


# --- the x0 rule (docs/method.md, "Beyond the paper") -----------------------------------------


def test_preview_step_moves_the_preview_down_the_loss(teacher: nn.Module) -> None:
    """One step moves the preview by lam * x0_step * sqrt(D) (RMS lam * x0_step per pixel), against the
    loss's gradient, and lowers the teacher's CE towards the labels."""
    x_t, y, eps_fn = _inputs()
    x0 = _preview(x_t, eps_fn(x_t, _t(400)), 400)
    cfg = FastADConfig(xi=1e-12)  # the entropy gate: lam differs per sample
    stats = GuidanceStats()
    with GuidanceLoss(teacher, y, cfg, GuidanceConfig(rule="x0", x0_step=0.05), view=VIEW, stats=stats) as loss:
        out = preview_step(loss, x_t, _t(400), x0)
        x = x0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(x)[0], x)
    assert out.dtype == x0.dtype and out.shape == x0.shape and not out.requires_grad
    with torch.no_grad():
        lam = cadr_gate(entropy_nats(teacher(VIEW(x0))), cfg)
    assert lam.std() > 0.01
    torch.testing.assert_close((out - x0).flatten(1).norm(dim=1), lam * 0.05 * 16.0, rtol=1e-4, atol=1e-7)
    assert bool((F.cosine_similarity((x0 - out).flatten(1), g.flatten(1), dim=1) > 0.999).all())
    ce = [_ce(teacher, v, y) for v in (x0, out)]
    assert ce[1].mean() < ce[0].mean() and (ce[1] < ce[0]).float().mean() >= 0.75
    assert len(stats.steps) == 1 and stats.steps[0]["t"] == 400
    assert stats.steps[0]["ce"] == pytest.approx(ce[0].mean().item(), rel=1e-5)


@pytest.mark.parametrize("clip_x0,ddim_eta", [(False, 0.0), (True, 0.0), (True, 1.0)])
def test_preview_sampler_with_zero_step_is_plain_ddim(teacher: nn.Module, clip_x0: bool, ddim_eta: float) -> None:
    """x0_step 0: bit for bit the plain sampler with the same clip_x0 (and the same noise draws)."""
    x_T, y, eps_fn = _inputs(seed=3)
    ts = ddim_timesteps(1000, 5)
    stats = GuidanceStats()
    plain = ddim_sample(eps_fn, x_T, ABAR, ts, clip_x0=clip_x0, ddim_eta=ddim_eta,
                        generator=torch.Generator().manual_seed(5))
    zero = preview_guided_sample(eps_fn, teacher, y, x_T, ABAR, ts, FastADConfig(),
                                 GuidanceConfig(rule="x0", x0_step=0), view=VIEW, stats=stats, clip_x0=clip_x0,
                                 ddim_eta=ddim_eta, generator=torch.Generator().manual_seed(5))
    assert zero.dtype == x_T.dtype and torch.isfinite(zero).all()
    assert torch.equal(zero, plain)
    assert [s["t"] for s in stats.steps] == ts.tolist()
    # The options did matter here: the clamp acts (previews leave [-1, 1]) and the noise is drawn.
    other = ddim_sample(eps_fn, x_T, ABAR, ts, clip_x0=not clip_x0, ddim_eta=ddim_eta,
                        generator=torch.Generator().manual_seed(5))
    assert not torch.equal(other, plain)


def test_preview_sampler_lowers_the_teachers_ce(teacher: nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(B, 1, 16, 16, generator=g)
    _, y, eps_fn = _inputs()
    ts = ddim_timesteps(1000, 5)
    plain = ddim_sample(eps_fn, x_T, ABAR, ts, clip_x0=True)
    steered = preview_guided_sample(eps_fn, teacher, y, x_T, ABAR, ts, FastADConfig(guidance="fixed"), X0,
                                    view=VIEW, clip_x0=True)
    assert not steered.requires_grad and torch.isfinite(steered).all()
    assert _ce(teacher, steered, y).mean() < _ce(teacher, plain, y).mean()


# --- low-pass gradient and smoothing teacher ----------------------------------------------------


def test_pool_grad_keeps_block_means_and_drops_fine_detail() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 1, 16, 16, generator=g)
    assert pool_grad(x, 1) is x
    p = pool_grad(x, 4)
    assert p.shape == x.shape
    # A pixel checkerboard (the finest texture) has zero block means: pooled away entirely.
    checker = ((torch.arange(16).view(-1, 1) + torch.arange(16)) % 2 * 2 - 1).float().expand(3, 1, 16, 16)
    assert pool_grad(checker, 4).abs().max() < 1e-6
    # A pattern constant on 4 x 4 blocks keeps its mean, and its energy mostly (bilinear upsampling).
    blocks = torch.randn(3, 1, 4, 4, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)
    torch.testing.assert_close(pool_grad(blocks, 4).mean(), blocks.mean())
    assert F.cosine_similarity(pool_grad(blocks, 4).flatten(1), blocks.flatten(1)).min() > 0.8
    # Sizes that k does not divide (28 / 8) still come back at the input's size.
    assert pool_grad(torch.randn(2, 3, 28, 28), 8).shape == (2, 3, 28, 28)


@pytest.mark.parametrize("rule", ["eps", "x0"])
def test_grad_pool_makes_the_correction_coarse(teacher: nn.Module, rule: str) -> None:
    """With grad_pool k the change the guidance makes is the pooled gradient's direction: smooth, with the
    teacher's CE still going down."""
    x_t, y, eps_fn = _inputs()
    eps = eps_fn(x_t, _t(400))
    x0 = _preview(x_t, eps, 400)
    cfg = FastADConfig(guidance="fixed", lambda_max=1.0, eta=0.1, xi=1e-12)
    out = {}
    for k in (1, 4):
        guidance = GuidanceConfig(rule=rule, x0_step=0.05, grad_pool=k)
        if rule == "x0":
            with GuidanceLoss(teacher, y, cfg, guidance, view=VIEW) as loss:
                out[k] = preview_step(loss, x_t, _t(400), x0) - x0
        else:
            with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, cfg, guidance=guidance, view=VIEW) as guided:
                out[k] = guided(x_t, _t(400)) - eps

    # Coarse: the pooled correction is (nearly) unchanged by pooling again, the raw one is not.
    def fine_share(d: torch.Tensor) -> float:
        return ((d - pool_grad(d, 4)).norm() / d.norm()).item()

    assert fine_share(out[4]) < 0.5 * fine_share(out[1])
    # It still steers: the preview moved along the pooled correction lowers the teacher's CE (rule eps:
    # the rectified eps moves the preview against its change).
    step = out[4] if rule == "x0" else -out[4] * 2.0
    assert _ce(teacher, x0 + step, y).mean() < _ce(teacher, x0, y).mean()


def test_smoothing_averages_the_teachers_loss_over_noisy_copies(teacher: nn.Module) -> None:
    """smooth_samples n, smooth_sigma s: the CE is the mean over n copies of the preview plus N(0, s^2) noise
    (drawn from the given generator), the gate and stats use the copies' mean probability."""
    x_t, y, eps_fn = _inputs()
    eps = eps_fn(x_t, _t(400))
    x0 = _preview(x_t, eps, 400)
    cfg = FastADConfig(guidance="fixed")
    smooth = GuidanceConfig(smooth_samples=3, smooth_sigma=0.5, bn_weight=0.0)
    stats = GuidanceStats()
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, cfg, guidance=smooth, view=VIEW, stats=stats,
                          generator=torch.Generator().manual_seed(7)) as guided:
        smoothed = guided(x_t, _t(400))
    noise = torch.randn((3 * B, *x0.shape[1:]), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        z = teacher(VIEW(x0.repeat(3, 1, 1, 1) + 0.5 * noise))
        ce = F.cross_entropy(z, y.repeat(3), reduction="none").view(3, B).mean(0)
        p = F.softmax(z, 1).view(3, B, -1).mean(0)
    assert stats.steps[0]["ce"] == pytest.approx(ce.mean().item(), rel=1e-5)
    assert stats.steps[0]["preview_acc"] == pytest.approx((p.argmax(1) == y).float().mean().item())
    # Same generator seed, same result; without noise the direction differs.
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, cfg, guidance=smooth, view=VIEW,
                          generator=torch.Generator().manual_seed(7)) as g2:
        torch.testing.assert_close(g2(x_t, _t(400)), smoothed)
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, cfg, guidance=GuidanceConfig(bn_weight=0.0), view=VIEW) as plain:
        assert not torch.allclose(plain(x_t, _t(400)), smoothed, atol=1e-4)
    # One copy without noise is the unsmoothed guidance exactly.
    with make_cadr_eps_fn(eps_fn, teacher, y, ABAR, cfg, guidance=GuidanceConfig(smooth_samples=1), view=VIEW) as one, \
            make_cadr_eps_fn(eps_fn, teacher, y, ABAR, cfg, view=VIEW) as base:
        assert torch.equal(one(x_t, _t(400)), base(x_t, _t(400)))
