"""T5-style span-corruption pretraining and sentiment fine-tuning (the code: `guided_recipes.run.t5`)."""
from guided_recipes.run.t5 import main

if __name__ == "__main__":
    main()
