"""The wheel users pip-install carries every bundled asset (an editable install would hide a missing one)."""

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
