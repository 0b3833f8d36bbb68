"""The main job: Table 1 on the offline de-en corpus (the code: `guided_recipes.run.main_job`)."""
from guided_recipes.run.main_job import main

if __name__ == "__main__":
    main()
