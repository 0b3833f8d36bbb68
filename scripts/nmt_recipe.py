"""NMT recipe: train or evaluate one variant (the code: `guided_recipes.nmt`)."""
from guided_recipes.nmt import main

if __name__ == "__main__":
    main()
