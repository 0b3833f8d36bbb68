"""The BLEU table of a folder of runs (the code: `guided_recipes.tables`)."""
from guided_recipes.tables import main

if __name__ == "__main__":
    main()
