"""Worked examples on real data: each trains one model side by side with nn.LSTM and after
lstm_fused.replace_lstm, and prints the losses, the test metric and the step times.

    python -m examples.forecast    # statsmodels' Mauna Loa CO2 series, 12 months ahead
    python -m examples.classify    # scikit-learn's 8x8 digits as sequences of rows
    python -m examples.charlm      # a character model of pydoc_data's help topics

Shared parts: examples/common.py. Data: statsmodels and scikit-learn (the `examples` extra),
and the standard library; nothing is downloaded.
"""
