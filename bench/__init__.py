"""The lstm_fused benchmark suite: `python -m bench` (see bench/README.md).

Cases (bench/cases.py) x providers (bench/workloads/) -> checked against the float64
reference -> timed (bench/timing.py) -> rows of one fixed schema (bench/report.py) written to
bench/results/<device>/ as CSV and JSON; `python -m bench.plot` draws them.
`python -m bench --interleaved MODE` (bench/interleaved.py) times a few cases' providers call
by call in turn, into the same rows.
"""
