"""`python -m guided_recipes.lanes`, as the README and results/horizon-* give it; the code is
guided_recipes.run.lanes."""
from .run.lanes import main

if __name__ == "__main__":
    main()
