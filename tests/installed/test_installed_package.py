"""The installed wheel, as tools/check_package.sh runs it: from a folder outside the source tree,
in a fresh venv. Not part of the in-tree suite (tests/conftest.py leaves tests/installed out):
these assertions are about where lstm_fused comes from.

LSTM_FUSED_SOURCE_TREE: the repository the wheel was built from (set by check_package.sh).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import pkgutil
import sys
from pathlib import Path

import torch

import lstm_fused


def source_tree() -> Path:
    tree = os.environ.get("LSTM_FUSED_SOURCE_TREE")
    assert tree, "LSTM_FUSED_SOURCE_TREE is not set: tools/check_package.sh runs this file"
    return Path(tree).resolve()


def test_lstm_fused_comes_from_the_venv_not_the_source_tree():
    where = Path(lstm_fused.__file__).resolve()
    assert where.is_relative_to(Path(sys.prefix).resolve()), (where, sys.prefix)
    assert not where.is_relative_to(source_tree()), where
    assert not any(Path(p or ".").resolve() == source_tree() for p in sys.path), sys.path
    assert Path(lstm_fused._C.__file__).resolve().parent == where.parent


def test_every_module_of_the_package_imports():
    # A module missing from the wheel, or one importing a file that is, fails here.
    names = [m.name for m in pkgutil.walk_packages(lstm_fused.__path__, "lstm_fused.")]
    assert "lstm_fused.triton_kernels" in names and "lstm_fused.ops.registry" in names
    for name in names:
        module = importlib.import_module(name)
        assert Path(module.__file__).resolve().is_relative_to(Path(sys.prefix).resolve())


def test_metadata():
    meta = importlib.metadata.metadata("lstm_fused")
    assert meta["Version"] == lstm_fused.__version__
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert meta["Requires-Python"] == ">=3.10"
    requires = importlib.metadata.requires("lstm_fused")
    assert "torch>=2.11" in requires
    extras = set(meta.get_all("Provides-Extra"))
    assert {"test", "bench", "examples", "rl", "triton", "onnx"} <= extras
    files = {str(f) for f in importlib.metadata.files("lstm_fused")}
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files), files


def test_built_against_the_torch_it_runs_with():
    built = lstm_fused.info.build_info()
    assert built["torch"] == torch.__version__
    assert built["git_commit"] == os.environ["LSTM_FUSED_EXPECT_COMMIT"]
    assert built["cpu_variants"] == list(lstm_fused._C.cpu_capabilities_built())
    assert lstm_fused.available_backends()[-2:] == ["cpu", "reference"]
