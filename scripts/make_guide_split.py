"""A held-out guide split from raw parallel text or a binarized corpus (the code: `guided_recipes.datalib.guide_split`)."""
import sys

from guided_recipes.datalib.guide_split import main

if __name__ == "__main__":
    sys.exit(main())
