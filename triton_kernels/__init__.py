"""Triton kernels of lstm_fused (installed as lstm_fused.triton_kernels)."""
