"""Profiles (configs/profiles/*.yaml), papermill overrides and validation.

A profile has a `common` section (seed, device, data source...) and one section per
notebook stage (`data`, `cnn`, ...). Keys are unique across sections, so an override
`-p key=value` names exactly one setting. The effective config of a stage is `common`
plus that stage's section, with overrides applied and checked (unknown key or wrong
type -> ConfigError naming the key) before any work starts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]   # cag_utils/run/config.py -> the repository
PROFILES_DIR = REPO_ROOT / "configs" / "profiles"
DEFAULT_PROFILE = "smoke"


class ConfigError(ValueError):
    """A profile or override that cannot be used; the message names the key."""


def profile_path(profile: str, profiles_dir: Path | None = None) -> Path:
    path = Path(profiles_dir or PROFILES_DIR) / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(profiles_dir or PROFILES_DIR).glob("*.yaml"))
        raise ConfigError(f"unknown profile {profile!r}; known profiles: {', '.join(known)}")
    return path


def load_profile(profile: str, profiles_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """The raw sections of a profile, with the uniqueness of keys checked."""
    with open(profile_path(profile, profiles_dir), encoding="utf-8") as fh:
        sections = yaml.safe_load(fh) or {}
    if "common" not in sections:
        raise ConfigError(f"profile {profile!r} has no 'common' section")
    seen: dict[str, str] = {}
    for section, values in sections.items():
        for key in values or {}:
            if key in seen:
                raise ConfigError(f"key {key!r} appears in sections {seen[key]!r} and {section!r}")
            seen[key] = section
    return sections


def key_sections(profile: str, profiles_dir: Path | None = None) -> dict[str, str]:
    """Map every settable key of a profile to its section."""
    return {k: s for s, values in load_profile(profile, profiles_dir).items() for k in values or {}}


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' -> (key, YAML-parsed value), e.g. 'epochs=3' -> ('epochs', 3)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def _check_type(key: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"parameter {key!r} must be {type(default).__name__} (profile value {default!r}), "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def validate_overrides(
    profile: str, overrides: Mapping[str, Any], sections: tuple[str, ...] | None = None,
    profiles_dir: Path | None = None,
) -> dict[str, Any]:
    """Check override keys and types against the profile; None values mean 'profile default'."""
    raw = load_profile(profile, profiles_dir)
    owners = {k: s for s, values in raw.items() for k in values or {}}
    checked: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in owners or (sections and owners[key] not in sections + ("common",)):
            scope = f"sections {list(sections)}" if sections else f"profile {profile!r}"
            known = sorted(k for k, s in owners.items() if not sections or s in sections + ("common",))
            raise ConfigError(f"unknown parameter {key!r} for {scope}; known: {', '.join(known)}")
        checked[key] = _check_type(key, raw[owners[key]][key], value)
    return checked


def load_config(
    profile: str = DEFAULT_PROFILE, section: str | None = None,
    overrides: Mapping[str, Any] | None = None, profiles_dir: Path | None = None,
) -> dict[str, Any]:
    """Effective config of one stage: common + section values, overrides applied and checked."""
    raw = load_profile(profile, profiles_dir)
    if section is not None and section not in raw:
        raise ConfigError(f"profile {profile!r} has no section {section!r}; sections: {', '.join(raw)}")
    sections = (section,) if section else tuple(raw)
    cfg: dict[str, Any] = {"profile": profile}
    for name in ("common",) + tuple(s for s in sections if s != "common"):
        cfg.update(raw[name] or {})
    cfg.update(validate_overrides(profile, overrides or {}, sections, profiles_dir))
    return cfg


def output_subdir(profile: str) -> str:
    """Outputs of the default profile go to the top folders; others to a profile-named subfolder."""
    return "" if profile == DEFAULT_PROFILE else profile


def output_root() -> Path:
    """Where results/, figures/ and data/work/ live: the repository, or $CAG_OUTPUT_ROOT
    (tests and side-by-side reruns use it to keep the committed outputs untouched)."""
    return Path(os.environ.get("CAG_OUTPUT_ROOT") or REPO_ROOT)


def results_dir(profile: str) -> Path:
    return output_root() / "results" / output_subdir(profile)


def figures_dir(profile: str) -> Path:
    return output_root() / "figures" / output_subdir(profile)


def work_dir(profile: str) -> Path:
    """Ignored folder for generated cohorts, caches and checkpoints of a profile."""
    return output_root() / "data" / "work" / profile


def notebook_config(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Effective config from a notebook's parameters: `profile`, `section` and any of the
    section's (or common) keys defined in the namespace; None means 'use the profile value'."""
    profile, section = namespace.get("profile", DEFAULT_PROFILE), namespace["section"]
    keys = [k for k, s in key_sections(profile).items() if s in (section, "common")]
    return load_config(profile, section, {k: namespace[k] for k in keys if k in namespace})
