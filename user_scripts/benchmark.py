"""Benchmark: guided runs against plain fairseq in one run (the code: `guided_recipes.bench.benchmark`)."""
from guided_recipes.bench.benchmark import main

if __name__ == "__main__":
    main()
