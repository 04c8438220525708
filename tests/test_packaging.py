"""The wheel users pip-install carries every bundled asset (an editable install would hide a missing one)."""

import pkgutil
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import lm_gym

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_every_asset(tmp_path):
    source = tmp_path / "src"  # a copy: setuptools builds in the tree it is given, and leaves build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("lm_gym", "agents"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(source)],
                   check=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("lm_gym-*.whl"))
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assets = Path(lm_gym.__file__).parent / "assets"
    expected = {f"lm_gym/assets/{p.relative_to(assets).as_posix()}" for p in assets.rglob("*") if p.is_file()}
    assert {"lm_gym/assets/tiny-lm/model.safetensors", "lm_gym/assets/arithmetic-lm/model.safetensors"} <= expected
    assert expected - shipped == set(), "bundled files missing from the wheel; see [tool.setuptools.package-data]"
    assert wheel.name.startswith(f"lm_gym-{lm_gym.__version__}-")  # one version: lm_gym.__version__


@pytest.mark.parametrize("package", ["lm_gym", "agents"])
def test_every_public_name_resolves_and_none_is_shadowed_by_a_submodule(package):
    """The packages export their API lazily (PEP 562); a submodule of the same name as an export would replace the
    export on the package once imported (lm_gym.suite the function vs lm_gym/suite.py)."""
    module = __import__(package)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    assert not set(module.__all__) & submodules
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_the_cli_answers_help_and_argument_errors_without_torch():
    """lm-gym --help took 6 s of CPU importing torch, SB3 and transformers; its parser now imports none of them."""
    code = ("import sys, agents.runs.cli as cli; cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'stable_baselines3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_clis_names_match_the_registries():
    """The CLI names algorithms and tasks without importing their registries; these are the registries' names."""
    from agents.runs.config import BACKENDS, TASK_IDS
    from agents.runs.tasks import TASKS
    from agents.sb3.algorithms import ALGORITHMS

    assert BACKENDS["sb3"] == tuple(ALGORITHMS) and TASK_IDS == tuple(TASKS)
    rllib = pytest.importorskip("agents.rllib")
    assert BACKENDS["rllib"] == tuple(rllib.RLLIB_ALGORITHMS)
