"""The distribution users install: a non-editable install carries the recipes, and the CLI
finds them from any directory."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow  # builds and installs the wheel: about 20 s
def test_installed_wheel_lists_and_finds_recipes_from_any_directory(tmp_path):
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
                    "--prefix", str(prefix), str(ROOT)], check=True, timeout=300, cwd=tmp_path)  # fmt: skip
    site = next(prefix.glob("lib/python*/site-packages"))
    assert (prefix / "share" / "bigkeras" / "recipes" / "fashion_mnist_cnn.py").is_file()
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy, not the source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listing = subprocess.run([sys.executable, "-m", "bigkeras.cli", "list"], env=env, cwd=elsewhere,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert "fashion_mnist_cnn" in listing.stdout and "reviews_minilm" in listing.stdout
    check = subprocess.run([sys.executable, "-c", "import bigkeras.cli as c; print(c.__file__, c.RECIPES)"],
                           env=env, cwd=elsewhere, capture_output=True, text=True, timeout=120)  # fmt: skip
    module, recipes = check.stdout.split()
    assert module.startswith(str(site)) and recipes == str(prefix / "share" / "bigkeras" / "recipes")
