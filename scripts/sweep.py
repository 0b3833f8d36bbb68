"""Guided or a sweep? Table 2 (the code: `guided_recipes.sweep`)."""
from guided_recipes.sweep import main

if __name__ == "__main__":
    main()
