"""Data for guided tasks: span_corruption (pure numpy math) and its fairseq dataset."""
