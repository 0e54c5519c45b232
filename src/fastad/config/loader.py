"""Resolve a run's configuration: defaults <- YAML file <- ``--set a.b=x`` <- common flags.

Everything is validated before any work starts; a problem is one :class:`UserError` line naming
the key, the value and what is allowed. The resolved config is written to every run folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from fastad.config.schema import Config
from fastad.errors import UserError


def load_config(
    path: str | Path | Config | None = None,
    sets: Iterable[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build a validated :class:`Config`.

    ``path``: YAML file (or a Config to start from); ``sets``: ``"section.key=value"`` strings (values
    parsed as YAML); ``overrides``: ``{"section.key": value}`` from the CLI's common flags (None values skipped).
    """
    raw: dict[str, Any] = {}
    if isinstance(path, Config):
        raw = to_dict(path)
    elif path is not None:
        raw = read_yaml(path)
    for item in sets:
        key, value = _parse_set(item)
        section, _, name = key.partition(".")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise UserError(f"config key '{section}': expected a section (mapping), got {raw[section]!r}")
        raw[section][name] = value
    for key, value in (overrides or {}).items():
        if value is not None:
            section, _, name = key.partition(".")
            raw.setdefault(section, {})[name] = value
    cfg = from_dict(raw)
    check(cfg)
    return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file '{p}' not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"config file '{p}' is not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file '{p}': expected a mapping of sections, got {type(data).__name__}")
    return data


def from_dict(raw: Mapping[str, Any]) -> Config:
    """Coerce a nested dict into a Config; unknown sections/keys and bad values raise UserError."""
    sections = {f.name: f for f in dataclasses.fields(Config)}
    kwargs: dict[str, Any] = {}
    for section, values in raw.items():
        if section not in sections:
            raise UserError(f"unknown config section '{section}'; valid sections: {', '.join(sections)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UserError(f"config section '{section}': expected a mapping of keys, got {values!r}")
        cls = sections[section].default_factory  # type: ignore[misc]
        fields = [f.name for f in dataclasses.fields(cls)]
        for name in values:
            if name not in fields:
                raise UserError(
                    f"unknown config key '{section}.{name}'; valid keys in '{section}': {', '.join(fields)}"
                )
        kwargs[section] = cls(**values)  # each section validates its own values
    return Config(**kwargs)


def check(cfg: Config) -> None:
    """Checks that span several keys."""
    r = cfg.data.train_range
    if r is not None and r[0] >= r[1]:
        raise UserError(f"config key 'data.train_range': got {r}; expected [start, stop) with start < stop")
    for key, ms in (("teacher_training.milestones", cfg.teacher_training.milestones),
                    ("distillation.milestones", cfg.distillation.milestones)):
        if list(ms) != sorted(set(ms)):
            raise UserError(f"config key '{key}': got {ms}; expected strictly increasing integers")
    d = cfg.diffusion
    if d.beta_start >= d.beta_end:
        raise UserError(
            f"config key 'diffusion.beta_end': got {d.beta_end:g}; expected > diffusion.beta_start ({d.beta_start:g})"
        )
    if cfg.guidance.rule == "x0" and cfg.fast_ad.grad_mode == "full":
        raise UserError("config key 'fast_ad.grad_mode': got 'full' but guidance.rule 'x0' differentiates at the "
                        "preview; use tweedie (or guidance.rule eps)")
    dev = cfg.run.device
    if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise UserError(f"config key 'run.device': got {dev!r}; expected auto, cpu, cuda, cuda:N or mps")


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (it loads back to an equal Config)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def format_config(cfg: Config) -> str:
    """The resolved config as YAML with each field's help text as a comment."""
    lines = []
    for sec in dataclasses.fields(cfg):
        obj = getattr(cfg, sec.name)
        lines.append(f"{sec.name}:")
        for f in dataclasses.fields(obj):
            value = yaml.safe_dump(getattr(obj, f.name), default_flow_style=True).strip()
            value = value.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"  {f.name}: {value}  # {f.metadata.get('help', '')}")
    return "\n".join(lines) + "\n"


def _parse_set(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or key.count(".") != 1 or not all(key.split(".")):
        raise UserError(f"--set {item!r}: expected section.key=value, e.g. --set distillation.lr=0.05")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {item!r}: value {text!r} is not valid YAML") from None
    return key, value
