"""The cell math of the CUDA kernels (csrc/lstm_cell_math.h), built for the CPU and checked
against lstm_fused.reference.

A tiny C++ library includes the header and registers two operators that run
`cell_forward_element` / `cell_backward_element` over every element of a batch of rows, in the
storage type of the inputs (float64, float32, float16, bfloat16: the same conversion path as
the kernels, fp32 accumulation for the half types). Outputs start as NaN so an element the
header does not write fails the comparison.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from lstm_fused import reference
from tolerances import TOL as TOLERANCES

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="no host C++ compiler to build the header test library",
)

WRAPPER = r"""
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <limits>

#include "lstm_cell_math.h"

namespace {
using at::Tensor;

// z (N, G), c_prev (N, H), peep (3, H) or absent -> gates (N, G), c (N, H), h (N, H)
std::tuple<Tensor, Tensor, Tensor> cell_forward(const Tensor& z_in, const Tensor& c_in,
                                                const c10::optional<Tensor>& peep_in) {
  const Tensor z = z_in.contiguous(), c_prev = c_in.contiguous();
  const int64_t N = z.size(0), G = z.size(1), H = G / 4;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor gates = at::full({N, G}, nan, z.options());
  Tensor c = at::full({N, H}, nan, z.options());
  Tensor h = at::full({N, H}, nan, z.options());
  const bool has_peep = peep_in.has_value() && peep_in->defined();
  const Tensor peep = has_peep ? peep_in->contiguous() : Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "cell_forward", [&] {
    const scalar_t* pp = has_peep ? peep.data_ptr<scalar_t>() : nullptr;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < H; ++j)
        lstm_fused::cell_forward_element<scalar_t>(
            z.data_ptr<scalar_t>() + n * G, c_prev.data_ptr<scalar_t>() + n * H, pp,
            gates.data_ptr<scalar_t>() + n * G, c.data_ptr<scalar_t>() + n * H,
            h.data_ptr<scalar_t>() + n * H, H, j);
  });
  return {gates, c, h};
}

// gates (N, G), c (N, H), c_prev (N, H), peep (3, H)?, dh (N, H), dc (N, H)
//   -> dz (N, G), dc_prev (N, H)
std::tuple<Tensor, Tensor> cell_backward(const Tensor& gates_in, const Tensor& c_in,
                                         const Tensor& c_prev_in,
                                         const c10::optional<Tensor>& peep_in,
                                         const Tensor& dh_in, const Tensor& dc_in) {
  const Tensor gates = gates_in.contiguous(), c = c_in.contiguous();
  const Tensor c_prev = c_prev_in.contiguous(), dh = dh_in.contiguous();
  const int64_t N = gates.size(0), G = gates.size(1), H = G / 4;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor dz = at::full({N, G}, nan, gates.options());
  Tensor dc = dc_in.contiguous().clone();  // in: gradient of c, out: of c_prev
  const bool has_peep = peep_in.has_value() && peep_in->defined();
  const Tensor peep = has_peep ? peep_in->contiguous() : Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gates.scalar_type(), "cell_backward", [&] {
    const scalar_t* pp = has_peep ? peep.data_ptr<scalar_t>() : nullptr;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < H; ++j)
        lstm_fused::cell_backward_element<scalar_t>(
            gates.data_ptr<scalar_t>() + n * G, c.data_ptr<scalar_t>() + n * H,
            c_prev.data_ptr<scalar_t>() + n * H, pp, dh.data_ptr<scalar_t>() + n * H,
            dc.data_ptr<scalar_t>() + n * H, dz.data_ptr<scalar_t>() + n * G, H, j);
  });
  return {dz, dc};
}

// sigmoid of every element, in the accumulation type of the storage type.
Tensor sigmoid(const Tensor& x_in) {
  const Tensor x = x_in.contiguous();
  Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid", [&] {
    for (int64_t k = 0; k < x.numel(); ++k)
      out.data_ptr<scalar_t>()[k] = lstm_fused::cell_sigmoid<scalar_t>(x.data_ptr<scalar_t>()[k]);
  });
  return out;
}
}  // namespace

TORCH_LIBRARY(lstm_cell_math_test, m) {
  m.def("cell_forward(Tensor z, Tensor c_prev, Tensor? peep) -> (Tensor, Tensor, Tensor)");
  m.def("cell_backward(Tensor gates, Tensor c, Tensor c_prev, Tensor? peep, Tensor dh, "
        "Tensor dc) -> (Tensor, Tensor)");
  m.def("sigmoid(Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(lstm_cell_math_test, CPU, m) {
  m.impl("cell_forward", &cell_forward);
  m.impl("cell_backward", &cell_backward);
  m.impl("sigmoid", &sigmoid);
}
"""


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    from torch.utils.cpp_extension import load

    build = tmp_path_factory.mktemp("cell_math_build")
    src = build / "cell_math_ops.cpp"
    src.write_text(WRAPPER)
    load(
        name="lstm_cell_math_test",
        sources=[str(src)],
        extra_include_paths=[str(ROOT / "csrc")],
        extra_cflags=["-O1"],
        build_directory=str(build),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.lstm_cell_math_test


TOL = TOLERANCES["cell_math"]  # unit roundoff per storage type (tests/tolerances.py)
DTYPES = list(TOL)


def _inputs(dtype, N=5, H=7, peephole=True, extreme=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, 4 * H, generator=g, dtype=torch.float64) * 2
    if extreme:  # saturate every gate: half the pre-activations at +100, half at -100
        z = torch.where(torch.rand(N, 4 * H, generator=g, dtype=torch.float64) < 0.5, 100.0, -100.0)
    c_prev = torch.randn(N, H, generator=g, dtype=torch.float64)
    peep = torch.randn(3, H, generator=g, dtype=torch.float64) if peephole else None
    cast = lambda t: None if t is None else t.to(dtype)
    return cast(z), cast(c_prev), cast(peep)


def _reference_forward(z, c_prev, peep):
    """(gates, c, h) in float64 from lstm_fused.reference.lstm_cell (z fed as x with W_ih = I)."""
    z, c_prev = z.double(), c_prev.double()
    peep = None if peep is None else peep.double()
    N, G = z.shape
    H = G // 4
    h_new, c_new = reference.lstm_cell(
        z,
        torch.zeros(N, H, dtype=torch.float64),
        c_prev,
        torch.eye(G, dtype=torch.float64),
        torch.zeros(G, H, dtype=torch.float64),
        None,
        None,
        peep,
    )
    zi, zf, zg, zo = z.chunk(4, dim=1)
    if peep is not None:
        zi, zf, zo = zi + peep[0] * c_prev, zf + peep[1] * c_prev, zo + peep[2] * c_new
    gates = torch.cat([torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg), torch.sigmoid(zo)], 1)
    return gates, c_new, h_new


def _reference_backward(z, c_prev, peep, dh, dc):
    """(dz, dc_prev) in float64 by autograd through lstm_fused.reference.lstm_cell."""
    z = z.double().clone().requires_grad_(True)
    c_prev = c_prev.double().clone().requires_grad_(True)
    peep = None if peep is None else peep.double()
    N, G = z.shape
    H = G // 4
    h_new, c_new = reference.lstm_cell(
        z,
        torch.zeros(N, H, dtype=torch.float64),
        c_prev,
        torch.eye(G, dtype=torch.float64),
        torch.zeros(G, H, dtype=torch.float64),
        None,
        None,
        peep,
    )
    loss = (h_new * dh.double()).sum() + (c_new * dc.double()).sum()
    dz, dc_prev = torch.autograd.grad(loss, (z, c_prev))
    return dz, dc_prev


def _close(actual, expected, dtype, what):
    assert actual.dtype == dtype, what
    assert not torch.isnan(actual).any(), f"{what}: NaN (unwritten or unstable) in {actual}"
    tol = TOL[dtype]
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(
        actual.double(),
        expected,
        rtol=tol["rtol"],
        atol=tol["atol"] * scale,
        msg=lambda m: f"{what}: {m}",
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("peephole", [False, True], ids=["plain", "peephole"])
@pytest.mark.parametrize("extreme", [False, True], ids=["normal", "z=+-100"])
def test_forward_matches_reference(ops, dtype, peephole, extreme):
    z, c_prev, peep = _inputs(dtype, peephole=peephole, extreme=extreme)
    gates, c, h = ops.cell_forward(z, c_prev, peep)
    ref_gates, ref_c, ref_h = _reference_forward(z, c_prev, peep)
    _close(gates, ref_gates, dtype, "gates")
    _close(c, ref_c, dtype, "c")
    _close(h, ref_h, dtype, "h")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("peephole", [False, True], ids=["plain", "peephole"])
@pytest.mark.parametrize("extreme", [False, True], ids=["normal", "z=+-100"])
def test_backward_matches_reference_autograd(ops, dtype, peephole, extreme):
    z, c_prev, peep = _inputs(dtype, peephole=peephole, extreme=extreme, seed=1)
    g = torch.Generator().manual_seed(2)
    dh = torch.randn(c_prev.shape, generator=g, dtype=torch.float64).to(dtype)
    dc = torch.randn(c_prev.shape, generator=g, dtype=torch.float64).to(dtype)
    # The backward takes the activated gates and cells as the forward saved them (rounded to
    # the storage type); the reference differentiates the same forward from the same inputs.
    gates, c, _h = ops.cell_forward(z, c_prev, peep)
    dz, dc_prev = ops.cell_backward(gates, c, c_prev, peep, dh, dc)
    ref_dz, ref_dc_prev = _reference_backward(z, c_prev, peep, dh, dc)
    # Half types: the saved gates carry one rounding each, which the gradient formulas amplify
    # by at most a small constant (products of three bounded factors).
    factor = 1.0 if dtype in (torch.float64, torch.float32) else 4.0
    for actual, expected, what in ((dz, ref_dz, "dz"), (dc_prev, ref_dc_prev, "dc_prev")):
        assert not torch.isnan(actual).any(), f"{what}: NaN in {actual}"
        tol = TOL[dtype]
        scale = max(1.0, expected.abs().max().item())
        torch.testing.assert_close(
            actual.double(),
            expected,
            rtol=factor * tol["rtol"],
            atol=factor * tol["atol"] * scale,
            msg=lambda m, w=what: f"{w} ({dtype}): {m}",
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_types_accumulate_in_float_and_round_once(ops, dtype):
    """For half / bfloat16 storage the header computes in float32 and rounds each output once:
    exactly the float32 result on the same (upcast) inputs, rounded to the storage type."""
    z, c_prev, peep = _inputs(dtype, N=16, H=24, seed=3)
    got = ops.cell_forward(z, c_prev, peep)
    want = ops.cell_forward(z.float(), c_prev.float(), peep.float())
    for a, b, what in zip(got, want, ("gates", "c", "h")):
        assert torch.equal(a, b.to(dtype)), f"{what} differs from the rounded float32 result"
    gates, c, _ = got
    g = torch.Generator().manual_seed(4)
    dh = torch.randn(c.shape, generator=g).to(dtype)
    dc = torch.randn(c.shape, generator=g).to(dtype)
    got_b = ops.cell_backward(gates, c, c_prev, peep, dh, dc)
    want_b = ops.cell_backward(
        gates.float(), c.float(), c_prev.float(), peep.float(), dh.float(), dc.float()
    )
    for a, b, what in zip(got_b, want_b, ("dz", "dc_prev")):
        assert torch.equal(a, b.to(dtype)), f"{what} differs from the rounded float32 result"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_sigmoid_is_stable_at_the_extremes(ops, dtype):
    x = torch.tensor(
        [-1e4, -800.0, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 800.0, 1e4, -math.inf, math.inf],
        dtype=dtype,
    )
    got = ops.sigmoid(x)
    assert not torch.isnan(got).any(), got
    # atol: float32 results below ~1e-38 are subnormal, with few significant bits.
    torch.testing.assert_close(
        got.double(),
        torch.sigmoid(x.double()),
        rtol=TOL[dtype]["rtol"],
        atol=torch.finfo(dtype).tiny,
    )
    assert got[0] == 0 and got[-3] == 1 and got[-1] == 1 and got[-2] == 0
