"""`python -m guided_recipes.hydra_objective`, the path results/sweep-*/commands.sh recorded
and the README gives; the code is guided_recipes.run.hydra_objective."""
from .run.hydra_objective import cli_main

if __name__ == "__main__":
    cli_main()
