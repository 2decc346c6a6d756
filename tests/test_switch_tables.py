"""The switch table is written once per language and the copies agree: lstm_fused/switches.py
(SWITCHES, EFFECTS) is the table; the C++ library's own (csrc/switches.cpp, read through
lstm_fused._C.switch_table()) has the same names and values for the switches it reads; the
Triton kernel library's paths (triton_kernels/tuning.py, PATHS) are triton_path's values; and
docs/contract.md shows the table as switches.markdown_table() writes it."""

import os

import pytest

from lstm_fused import switches
from backends import LOAD_ERROR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(LOAD_ERROR is not None, reason=f"{LOAD_ERROR}")
def test_cpp_table_matches_the_python_table():
    from lstm_fused import _C

    cpp = _C.switch_table()
    python = {name: switches.SWITCHES[name][1] for name in switches.CPP_SWITCHES}
    assert cpp == python


@pytest.mark.skipif(LOAD_ERROR is not None, reason=f"{LOAD_ERROR}")
def test_cpp_library_takes_every_value_of_the_table_and_refuses_others():
    from lstm_fused import _C

    for name, values in _C.switch_table().items():
        old = _C.get_switch(name)
        try:
            for value in values:
                _C.set_switch(name, value)
                assert _C.get_switch(name) == value
            with pytest.raises(ValueError, match=f"not a value of the switch {name}"):
                _C.set_switch(name, "no such value")
        finally:
            _C.set_switch(name, old)
    with pytest.raises(
        ValueError, match="the C\\+\\+ switches are " + ", ".join(_C.switch_table())
    ):
        _C.set_switch("no_such_switch", "")


def test_triton_paths_are_the_switch_values():
    pytest.importorskip("triton")
    from lstm_fused.triton_kernels import tuning

    assert ("",) + tuning.PATHS == switches.SWITCHES["triton_path"][1]


def test_every_switch_has_its_effect_written():
    assert set(switches.EFFECTS) == set(switches.SWITCHES)
    assert set(switches.CPP_SWITCHES) <= set(switches.SWITCHES)
    assert set(switches.TRITON_SWITCHES) <= set(switches.SWITCHES)


def test_contract_shows_the_table():
    with open(os.path.join(ROOT, "docs", "contract.md")) as f:
        contract = f.read()
    assert switches.markdown_table() in contract
