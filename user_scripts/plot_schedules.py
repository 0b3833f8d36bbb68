"""Plots of learned schedules and loss curves of a folder of runs (the code: `guided_recipes.report.plots`)."""
from guided_recipes.report.plots import main

if __name__ == "__main__":
    main()
