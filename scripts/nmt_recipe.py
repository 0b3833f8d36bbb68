"""NMT recipe: train or evaluate one variant (the code: `guided_recipes.run.nmt`)."""
from guided_recipes.run.nmt import main

if __name__ == "__main__":
    main()
