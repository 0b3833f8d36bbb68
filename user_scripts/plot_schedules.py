"""Plots of learned schedules and loss curves of a folder of runs (the code: `guided_recipes.plots`)."""
from guided_recipes.plots import main

if __name__ == "__main__":
    main()
