"""Compile check of the CUDA sources on a machine without a GPU (and with any build of torch).

Every csrc/cuda/*.cu is compiled with nvcc (-c, sm_80 and sm_90 in one call, the flags of
setup.py, the C++ standard torch.utils.cpp_extension uses for the installed torch) and every
csrc/cuda/*.cpp with the host compiler, against the installed torch's headers plus
tests/cuda_shim/ (tests/cuda_build_helpers.py). A compile error, or a compiler warning located
in csrc/, fails the test. Results are cached by a hash of the sources, flags and tool versions
($LSTM_FUSED_COMPILE_CACHE, default .cicache/compile/): a second run with nothing changed takes
seconds; a cold run compiles every file (minutes on 2 cores). Marked slow_compile (deselect
with -m "not slow_compile"); skipped only when nvcc or a host compiler is absent.

Compile times measured here (nvcc 13.0, torch 2.14.1+cu130 headers, sm_90 only, `nvcc --time`):
before the kernels were split from the host code, at a load average of 2-4, mhsa_cuda.cu took
80 s (cicc 38, cudafe++ 16, host g++ 12, ptxas 9), attention_kernels.cu 55 s (host g++ 20,
cudafe++ 16, cicc 14), lstm_gate_kernels.cu 39 s and lstm_persistent_kernels.cu 37 s (of which
cudafe++ and host g++ ~21 s: the torch headers). After it, with only c10 headers in the .cu
files, the dK/dV + dQ launcher of one (float32, Dh <= 32) took 22 s at a load average of ~10
(cudafe++ 8.4, cicc 5.6, host g++ 4.9, ptxas 0.4).
"""

from __future__ import annotations

import sys

import pytest

import cuda_build_helpers as cb

pytestmark = [
    pytest.mark.slow_compile,
    pytest.mark.skipif(cb.NVCC is None, reason="nvcc (CUDA toolkit) not found"),
]


@pytest.fixture(scope="module")
def compile_results(tmp_path_factory):
    """{source path: (return code, compiler output, cached)} for every CUDA source."""
    return cb.compile_all(tmp_path_factory.mktemp("cuda_objs"))


def test_there_are_cuda_sources():
    assert cb.CU_FILES, f"no .cu files under {cb.CSRC / 'cuda'}"


def test_the_standard_is_torchs():
    from torch.utils.cpp_extension import BuildExtension  # noqa: F401  (the source it reads)

    std = cb.torch_cxx_std()
    assert std in ("-std=c++17", "-std=c++20", "-std=c++23"), std


@pytest.mark.parametrize("src", cb.CU_FILES, ids=lambda p: p.name)
def test_cu_file_compiles_for_sm80_and_sm90(compile_results, src):
    rc, output, _cached = compile_results[src]
    assert rc == 0, f"nvcc failed on {src.name}:\n{output[-6000:]}"
    ours = cb.warnings_in_our_code(output)
    assert not ours, f"nvcc warnings in csrc/ for {src.name}:\n" + "\n".join(ours)


@pytest.mark.skipif(cb.CXX is None, reason="no host C++ compiler (g++/c++) found")
@pytest.mark.parametrize("src", cb.CPP_FILES, ids=lambda p: p.name)
def test_cuda_host_cpp_compiles(compile_results, src):
    rc, output, _cached = compile_results[src]
    assert rc == 0, f"the host compiler failed on {src.name}:\n{output[-6000:]}"
    ours = cb.warnings_in_our_code(output)
    assert not ours, f"compiler warnings in csrc/ for {src.name}:\n" + "\n".join(ours)


def test_kernel_sources_need_no_torch_headers():
    """The .cu files (kernels and launchers) compile without ATen / torch headers: those cost
    more compile time than the kernels. Host code belongs in the .cpp files."""
    offenders = []
    for f in cb.CU_FILES + sorted(cb.CSRC.glob("cuda/*.cuh")):
        for line in f.read_text().splitlines():
            if line.startswith("#include") and ("<ATen/" in line or "<torch/" in line):
                offenders.append(f"{f.name}: {line}")
    assert not offenders, "\n".join(offenders)


def test_compile_check_catches_an_error(tmp_path):
    """The check itself can fail (never cached): a .cu with a type error must not compile."""
    bad = tmp_path / "bad.cu"
    bad.write_text(
        '#include "lstm_cell_math.h"\n'
        "__global__ void k(float* p) { p[0] = lstm_fused::cell_sigmoid(p); }\n"
    )
    cmd = cb.nvcc_command(bad, tmp_path / "bad.o", archs=("80",), resource_usage=False)
    rc, output = cb.run(cmd)
    assert rc != 0, output
    assert "error" in output.lower()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
