"""A portable install: dependencies declared as imported, optional TensorBoard, no Linux-only calls."""

import ast
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest

from comatch import config as cfg
from comatch.errors import UserError
from comatch.training.monitor import tensorboard_tag
from comatch.training.runtime import usable_cpus

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = {"PIL": "pillow", "sklearn": "scikit-learn", "yaml": "pyyaml"}  # import name -> package name


def _name(requirement: str) -> str:
    return re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower()


def _imported() -> set[str]:
    found = set()
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {DISTRIBUTION.get(m, m).replace("_", "-").lower() for m in found
            if m not in sys.stdlib_module_names and m not in ("comatch", "__future__")}


def test_every_imported_package_is_declared_and_every_dependency_imported():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {_name(r) for r in project["dependencies"]}
    optional = {_name(r) for extra, reqs in project["optional-dependencies"].items() if extra != "dev" for r in reqs}
    imported = _imported()
    transitive = {"huggingface-hub", "safetensors"}  # timm's own dependencies, used only with the timm extra
    assert imported - required - optional - transitive == set()
    assert required - imported == set()  # scipy, for one, is not imported: not declared
    assert "pillow" in required and "tensorboard" not in required and "tensorboard" in optional


def test_tensorboard_is_on_by_default_only_when_installed(monkeypatch):
    assert cfg.build_config().run.tensorboard == cfg.tensorboard_installed()
    monkeypatch.setattr(cfg, "tensorboard_installed", lambda: False)
    assert cfg.build_config().run.tensorboard is False
    with pytest.raises(UserError, match=r"pip install 'comatch\[tensorboard\]', or set run.tensorboard=false"):
        cfg.build_config(overrides=["run.tensorboard=true"])


def test_tensorboard_tags_name_the_class():
    names = ["eight", "one", "two"]
    assert tensorboard_tag("train", "pseudo_label_share_0", names) == "train/pseudo_label_share/eight"
    assert tensorboard_tag("train", "pseudo_label_share_2", names) == "train/pseudo_label_share/two"
    assert tensorboard_tag("train", "mask_rate", names) == "train/mask_rate"
    assert tensorboard_tag("train", "pseudo_label_share_5", names) == "train/pseudo_label_share_5"  # no name known


def test_usable_cpus_without_an_affinity_call(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert usable_cpus() == len(os.sched_getaffinity(0))
        monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cpus() == 6


def test_no_linux_only_calls_outside_a_fallback():
    for path in (ROOT / "src").rglob("*.py"):
        text = path.read_text()
        assert "import fcntl" not in text, path
        for line in re.findall(r".*sched_getaffinity\(.*", text):
            assert "try" in text[:text.index(line)].rsplit("def ", 1)[-1], (path, line)  # inside a try


def test_the_command_line_parser_imports_no_third_party_package():
    import subprocess

    code = ("import sys; before = set(sys.modules); import comatch, comatch.errors, comatch.cli; "
            "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "['comatch']"  # so .ci/portable runs --help on 3.10 and 3.13 without packages
