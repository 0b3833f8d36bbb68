"""The optimizer step alone, guided against stock adam (the code: `guided_recipes.bench.bench_step`)."""
from guided_recipes.bench.bench_step import main

if __name__ == "__main__":
    main()
