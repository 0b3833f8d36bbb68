"""Model architectures for guided runs (fairseq imports this folder for --user-dir)."""
