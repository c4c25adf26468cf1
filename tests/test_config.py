import pytest

from cag_utils.run.config import (ConfigError, key_sections, load_config, notebook_config, parse_override,
                              validate_overrides)


def test_smoke_and_paper_profiles_have_the_same_keys():
    assert key_sections("smoke") == key_sections("paper")


def test_effective_config_merges_common_and_section():
    cfg = load_config("smoke", "data")
    assert cfg["profile"] == "smoke" and "seed" in cfg and "n_annotation_exams" in cfg


def test_override_applies_and_int_widens_to_float():
    cfg = load_config("smoke", "data", {"n_annotation_exams": 5, "low_dose_fraction": 1})
    assert cfg["n_annotation_exams"] == 5 and cfg["low_dose_fraction"] == 1.0


def test_none_means_profile_value():
    assert load_config("smoke", "data", {"seed": None})["seed"] == load_config("smoke", "data")["seed"]


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match="n_exmas"):
        load_config("smoke", "data", {"n_exmas": 3})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="image_size"):
        validate_overrides("smoke", {"image_size": "big"})
    with pytest.raises(ConfigError, match="annotator_noise"):
        validate_overrides("smoke", {"annotator_noise": True})


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown profile"):
        load_config("nonesuch")


def test_parse_override_uses_yaml_types():
    assert parse_override("n_annotation_exams=12") == ("n_annotation_exams", 12)
    assert parse_override("run_seconds=[1, 2]") == ("run_seconds", [1, 2])
    with pytest.raises(ConfigError):
        parse_override("no_equals_sign")


def test_notebook_config_reads_parameters_from_a_namespace():
    cfg = notebook_config({"profile": "smoke", "section": "data", "image_size": 64, "seed": None,
                           "unrelated_variable": 1})
    assert cfg["image_size"] == 64 and "unrelated_variable" not in cfg
