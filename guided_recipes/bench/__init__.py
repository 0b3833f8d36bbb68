"""Benchmarks: the guided step's cost against plain fairseq, as whole runs (benchmark),
interleaved in one process (interleaved), and the optimizer step alone (bench_step)."""
