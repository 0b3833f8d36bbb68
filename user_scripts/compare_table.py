"""The BLEU table of a folder of runs (the code: `guided_recipes.report.tables`)."""
from guided_recipes.report.tables import main

if __name__ == "__main__":
    main()
