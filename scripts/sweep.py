"""Guided or a sweep? Table 2 (the code: `guided_recipes.run.sweep`)."""
from guided_recipes.run.sweep import main

if __name__ == "__main__":
    main()
