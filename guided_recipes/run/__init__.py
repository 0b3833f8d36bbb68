"""Running: the NMT and T5 recipes, the main job and its studies, the sweep, the compute
plan (lanes), and exporting a checkpoint that stock fairseq loads."""
