"""Resolve a run's configuration: defaults <- YAML file <- ``--set a.b=x`` <- common flags.

Everything is validated before any work starts; a problem is one :class:`UserError` line naming
the key, the value and what is allowed. The resolved config is written to every run folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from fastad.config.schema import Config
from fastad.errors import UserError
from fastad.options import shown


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


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let PyYAML report it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {shown(key)} appears twice in the same mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line saying what is wrong with a YAML text and where."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(getattr(e, "problem", "") or "").split())
    tag = re.search(r"tag '([^']*)'", problem)
    if isinstance(e, yaml.constructor.ConstructorError) and tag and "constructor" in problem:
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        return (f"tag {shown(name)}{where} is not allowed; config files hold plain values only "
                "(numbers, strings, booleans, lists, null)")
    if isinstance(e, yaml.constructor.ConstructorError):
        return f"{problem}{where}"
    return f"is not valid YAML{where}" + (f": {problem}" if problem else "")


def parse_yaml(text: str) -> Any:
    """Plain YAML values only (safe loader, no duplicate keys); raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's sections; every problem with the file is one UserError naming it."""
    p = Path(path)
    name = f"config file {shown(str(p))}"
    try:
        if p.is_dir():
            raise UserError(f"{name} is a directory; expected a YAML file")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{name} not found") from None
    except PermissionError:
        raise UserError(f"{name}: cannot read it (permission denied)") from None
    except OSError as e:
        raise UserError(f"{name}: cannot read it ({e.strerror or type(e).__name__})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{name}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                        "expected a UTF-8 YAML file") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as e:
        problem = _yaml_problem(e)
        sep = " " if problem.startswith("is not valid") else ": "
        raise UserError(f"{name}{sep}{problem}") from None
    if data is None:
        raise UserError(f"{name} is empty (no settings); expected a mapping of sections, e.g. 'distillation: "
                        "{lr: 0.1}' (fastad config prints them all)")
    if not isinstance(data, dict):
        raise UserError(f"{name}: expected a mapping of sections, got {type(data).__name__} {shown(data)}")
    return data


def _suggest(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the nearest valid name, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def from_dict(raw: Mapping[str, Any]) -> Config:
    """Coerce a nested dict into a Config; unknown sections/keys and bad values raise UserError."""
    sections = {f.name: f for f in dataclasses.fields(Config)}
    keys = {s: [f.name for f in dataclasses.fields(sections[s].default_factory)] for s in sections}  # type: ignore[misc]
    every = [f"{s}.{k}" for s, names in keys.items() for k in names]
    kwargs: dict[str, Any] = {}
    for section, values in raw.items():
        if section not in sections:
            close = difflib.get_close_matches(str(section), list(sections), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            if not hint and isinstance(values, dict) and values:  # a known key under a wrong section name
                first = str(next(iter(values)))
                hint = next((f"; did you mean '{k}'?" for k in every if k.endswith(f".{first}")), "")
            raise UserError(f"unknown config section {shown(str(section))}{hint or ';'} valid sections: "
                            f"{', '.join(sections)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UserError(f"config section '{section}': expected a mapping of keys, got {shown(values)}")
        fields = keys[section]
        for name in values:
            if name not in fields:
                name = str(name)
                close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
                elsewhere = [k for k in every if k.endswith(f".{name}")]  # a key that lives in another section
                hint = (f"; did you mean '{section}.{close[0]}'?" if close
                        else f"; did you mean '{elsewhere[0]}'?" if elsewhere else ";")
                raise UserError(f"unknown config key {shown(f'{section}.{name}')}{hint} valid keys in "
                                f"'{section}': {', '.join(fields)}")
        kwargs[section] = sections[section].default_factory(**values)  # type: ignore[misc]  # each validates itself
    return Config(**kwargs)


def check(cfg: Config) -> None:
    """Checks that span several keys, and names that must exist (models, datasets)."""
    from fastad.data import DATASETS
    from fastad.models import list_models

    r = cfg.data.train_range
    if r is not None and r[0] >= r[1]:
        raise UserError(f"config key 'data.train_range': got {r}; expected [start, stop) with start < stop")
    if cfg.data.classes is not None:
        if not cfg.data.classes:
            raise UserError("config key 'data.classes': got []; expected a non-empty list of class ids, or null (all)")
        if len(set(cfg.data.classes)) != len(cfg.data.classes):
            raise UserError(f"config key 'data.classes': got {shown(cfg.data.classes)}; expected distinct class ids")
    if cfg.data.dataset is not None and cfg.data.dataset not in DATASETS:
        raise UserError(f"config key 'data.dataset': got {shown(cfg.data.dataset)}"
                        f"{_suggest(cfg.data.dataset, DATASETS)}; expected one of: {', '.join(DATASETS)}, or null")
    models = list_models()
    for key, arch in (("teacher_training.arch", cfg.teacher_training.arch),
                      ("distillation.teacher_arch", cfg.distillation.teacher_arch),
                      ("distillation.student_arch", cfg.distillation.student_arch)):
        if arch is not None and arch not in models:
            raise UserError(f"config key '{key}': unknown model {shown(arch)}{_suggest(arch, models)}; expected one "
                            f"of: {', '.join(models)}")
    # Milestones must increase; one beyond the last epoch is accepted (it acts once the run is extended with
    # --resume --epochs, and the bench's time comparison stretches them), as is eval_every beyond the epochs.
    for key, ms in (("teacher_training.milestones", cfg.teacher_training.milestones),
                    ("distillation.milestones", cfg.distillation.milestones)):
        if list(ms) != sorted(set(ms)):
            raise UserError(f"config key '{key}': got {shown(ms)}; expected strictly increasing integers")
    if not cfg.diffusion.block_out_channels:
        raise UserError("config key 'diffusion.block_out_channels': got []; expected a non-empty list of integers "
                        ">= 1 (channels per UNet level, e.g. [32, 64, 64])")
    d = cfg.diffusion
    if d.beta_start >= d.beta_end:
        raise UserError(
            f"config key 'diffusion.beta_end': got {d.beta_end:g}; expected > diffusion.beta_start ({d.beta_start:g})"
        )
    if d.sample_steps > d.num_train_timesteps:
        raise UserError(f"config key 'diffusion.sample_steps': got {d.sample_steps}; expected <= "
                        f"diffusion.num_train_timesteps ({d.num_train_timesteps})")
    if cfg.fast_ad.ddim_steps > cfg.fast_ad.T:
        raise UserError(f"config key 'fast_ad.ddim_steps': got {cfg.fast_ad.ddim_steps}; expected <= fast_ad.T "
                        f"({cfg.fast_ad.T}), the diffusion timesteps")
    if cfg.guidance.rule == "x0" and cfg.fast_ad.grad_mode == "full":
        raise UserError("config key 'fast_ad.grad_mode': got 'full' but guidance.rule 'x0' differentiates at the "
                        "preview; use tweedie (or guidance.rule eps)")
    m, sd = cfg.distillation.mean, cfg.distillation.std
    if m is not None and sd is not None and len(m) != len(sd):
        raise UserError(f"config key 'distillation.std': got {shown(sd)} ({len(sd)} channels) but distillation.mean "
                        f"has {len(m)}; expected one value per channel")
    dev = cfg.run.device
    if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise UserError(f"config key 'run.device': got {shown(dev)}; expected auto, cpu, cuda, cuda:N or mps")


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


RUN_HEADER = "# fastad {command} run\n"


def save_config(cfg: Config, path: str | Path, *, command: str | None = None) -> None:
    """Write the resolved config as YAML (it loads back to an equal Config), atomically; ``command``: the
    command whose run folder this is, recorded in a first comment line (see :func:`run_command`)."""
    from fastad.utils.io import atomic_write

    text = (RUN_HEADER.format(command=command) if command else "") + yaml.safe_dump(to_dict(cfg), sort_keys=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def run_command(path: str | Path) -> str | None:
    """The command recorded in a run's config.yaml by :func:`save_config`; None when it records none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError:
        return None
    m = re.fullmatch(r"# fastad (\S+) run\n?", first)
    return m.group(1) if m else None


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
        raise UserError(f"--set {shown(item)}: expected section.key=value, e.g. --set distillation.lr=0.05")
    try:
        value = parse_yaml(text) if text.strip() else None
    except yaml.YAMLError as e:
        problem = _yaml_problem(e)
        if problem.startswith("is not valid"):
            problem = f"value {shown(text)} is not valid YAML"
        raise UserError(f"--set {shown(key)}: {problem}") from None
    return key, value
