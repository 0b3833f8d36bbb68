"""Benchmark: guided configurations against plain fairseq adam, interleaved in one process (the code: `guided_recipes.bench.interleaved`)."""
from guided_recipes.bench.interleaved import main

if __name__ == "__main__":
    main()
