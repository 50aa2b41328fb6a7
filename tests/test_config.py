"""Typed choices checked when the configuration is built; resumable fields derived from the marks."""

import re

import pytest

from comatch import config as cfg
from comatch.errors import UserError
from comatch.methods import METHODS
from comatch.training.checkpoint import _flatten, check_resume_compatible


def test_method_names_come_from_the_one_mapping():
    assert cfg.Method.__args__ == tuple(METHODS)
    with pytest.raises(UserError, match="invalid value 'comatchh' for method: .*'comatch', 'fixmatch', 'supervised'"):
        cfg.build_config(overrides=["method=comatchh"])


def test_each_method_with_settings_has_its_section():
    config = cfg.build_config()
    for cls in METHODS.values():
        if cls.section is not None:
            assert isinstance(getattr(config, cls.section), cls.Settings)
    with pytest.raises(UserError, match="unknown config key 'mixmatch.tau'"):
        cfg.build_config(overrides=["mixmatch.tau=0.9"])


def test_resumable_fields_are_real_fields_and_exclude_what_changes_a_run():
    fields = cfg.resumable_fields()
    every = set(_flatten(cfg.build_config().model_dump(mode="json")))
    assert fields <= every, fields - every
    assert {"optim.iterations", "run.log_every", "data.num_workers", "run.threads"} <= fields
    assert not fields & {"seed", "method", "comatch.alpha", "optim.lr", "data.labels_per_class", "model.arch"}
    old = cfg.build_config().model_dump(mode="json")
    new = cfg.build_config(overrides=["run.log_every=7", "optim.iterations=4000"]).model_dump(mode="json")
    assert set(check_resume_compatible(old, new)) == {"run.log_every", "optim.iterations"}
    with pytest.raises(UserError, match=r"cannot resume with a different comatch.alpha \(0.9 -> 0.5\)"):
        check_resume_compatible(old, cfg.build_config(overrides=["comatch.alpha=0.5"]).model_dump(mode="json"))


# ------------------------------------------------------------------ FixMatch's own section
def _fixmatch_criterion(config):
    from comatch.methods import MethodContext

    return METHODS["fixmatch"].from_config(config, MethodContext(num_classes=3, proj_dim=4)).criterion


def test_fixmatch_reads_its_own_section_not_comatchs():
    config = cfg.build_config(method="fixmatch", overrides=["fixmatch.threshold=0.7", "fixmatch.lambda_u=2"])
    crit = _fixmatch_criterion(config)
    assert (crit.threshold, crit.lambda_u) == (0.7, 2.0)
    assert config.comatch.threshold == 0.95  # CoMatch's tau is not FixMatch's
    with pytest.raises(UserError, match="unknown config key 'fixmatch.alpha'"):
        cfg.build_config(overrides=["fixmatch.alpha=0.5"])


def test_a_fixmatch_override_of_comatchs_threshold_is_refused_with_the_right_key():
    with pytest.raises(UserError, match=r"comatch\.threshold does not apply to method fixmatch; set fixmatch\.threshold=0\.7"):
        cfg.build_config(method="fixmatch", overrides=["comatch.threshold=0.7"])
    cfg.build_config(method="comatch", overrides=["comatch.threshold=0.7"])  # CoMatch's own: fine


@pytest.mark.parametrize("method, override, section", [
    ("fixmatch", "comatch.alpha=0.5", "fixmatch"),
    ("fixmatch", "comatch.threshold_start=0.8", "fixmatch"),
    ("comatch", "fixmatch.threshold=0.7", "comatch"),
    ("comatch", "mixmatch.alpha=0.5", "comatch"),
    ("supervised", "comatch.lambda_c=2", None),
])
def test_an_override_of_another_methods_section_is_refused(method, override, section):
    """Training reads only its own method's section: another's setting would change nothing."""
    key, value = override.split("=")
    reads = f"it reads the {section} section" if section else "it has no settings of its own"
    with pytest.raises(UserError, match=rf"^{re.escape(key)} does not apply to method {method} \({reads}\); "
                                        rf"drop it, or train with --method {key.split('.')[0]}$"):
        cfg.build_config(method=method, overrides=[override])
    cfg.build_config(method=key.split(".")[0], overrides=[override])  # its own method's: fine


def test_a_config_written_before_the_fixmatch_section_keeps_its_meaning(tmp_path):
    """An older fixmatch run's config.yaml (or your own file) kept tau and lambda_u under comatch."""
    old = tmp_path / "config.yaml"
    old.write_text("method: fixmatch\ncomatch:\n  threshold: 0.6\n  lambda_u: 10\n")
    config = cfg.build_config(config_file=old)
    assert (config.fixmatch.threshold, config.fixmatch.lambda_u) == (0.6, 10.0)
    crit = _fixmatch_criterion(config)
    assert (crit.threshold, crit.lambda_u) == (0.6, 10.0)
    # a file with the section reads the section
    new = tmp_path / "new.yaml"
    new.write_text("method: fixmatch\ncomatch:\n  threshold: 0.6\nfixmatch:\n  threshold: 0.8\n")
    assert cfg.build_config(config_file=new).fixmatch.threshold == 0.8


@pytest.mark.parametrize("name", cfg.preset_names())
def test_every_preset_gives_fixmatch_the_same_tau_and_lambda_u_as_comatch(name):
    """`--method fixmatch` compares methods under identical settings (docs/reproducing.md)."""
    extra = ["data.labeled=/somewhere"] if name == "folder" else []
    config = cfg.build_config(preset=name, method="fixmatch", overrides=extra)
    assert (config.fixmatch.threshold, config.fixmatch.lambda_u) == (config.comatch.threshold, config.comatch.lambda_u)


def test_a_run_from_before_the_fixmatch_section_resumes():
    """A checkpoint's config written before a section existed reads as the current schema reads
    it: the new section takes what the old run computed with, and the resume goes on."""
    def without_fixmatch(config):
        return {k: v for k, v in config.model_dump(mode="json").items() if k != "fixmatch"}

    comatch = cfg.build_config()
    assert check_resume_compatible(without_fixmatch(comatch), comatch.model_dump(mode="json")) == {}
    old = without_fixmatch(cfg.build_config(method="fixmatch"))
    old["comatch"]["threshold"] = 0.6  # where the older run kept FixMatch's tau
    new = cfg.validate(old).model_dump(mode="json")  # what --resume builds from its config.yaml
    assert new["fixmatch"]["threshold"] == 0.6
    assert check_resume_compatible(old, new) == {}
    changed = cfg.build_config(method="fixmatch", overrides=["fixmatch.threshold=0.7"]).model_dump(mode="json")
    with pytest.raises(UserError, match=r"fixmatch.threshold \(0.95 -> 0.7\)"):
        check_resume_compatible(without_fixmatch(cfg.build_config(method="fixmatch")), changed)
