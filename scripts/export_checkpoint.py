"""A guided checkpoint that stock fairseq loads as it is (the code: `guided_recipes.run.export`)."""
import sys

from guided_recipes.run.export import main

if __name__ == "__main__":
    sys.exit(main())
