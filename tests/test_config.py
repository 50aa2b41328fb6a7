"""Typed choices checked when the configuration is built; resumable fields derived from the marks."""

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
