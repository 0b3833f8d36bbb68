"""The fairseq log keys that the readers here (runlogs, plots, findings, the studies, the T5
recipe, the benchmarks) read: the one place they are spelled. The plugin writes its keys to
fairseq.metrics (its guidance step and guided optimizers); tests/test_log_keys.py runs the
plugin and checks that it writes exactly these, so a renamed key fails a test instead of
leaving a plot empty."""

# --- written by the plugin -------------------------------------------------------------
LEARNED_PREFIX = "guided_"  # guided_NAME, or guided_NAME/GROUP with --guided-groups: a learned value
LEARNED_NAMES = ("alpha", "beta1", "beta2", "eps", "weight_decay")  # --guided-hparams' names
ALPHA = LEARNED_PREFIX + "alpha"
BETA1 = LEARNED_PREFIX + "beta1"
GUIDE_LOSS = "guide_loss"  # guidance loss at the updated parameters (bits/token)
META_MS = "guide_meta_ms"  # with --guidance-time-pass: one meta step, timed ...
PASS_MS = "guide_pass_ms"  # ... and one plain forward+backward of its guidance batch
# written too, read by no reader here (the README's table of log fields)
HGRAD_PREFIX = "hgrad_"  # hgrad_NAME[/GROUP]: the hypergradient of a learned value
EFF_LR = "eff_lr"  # eff_lr[/GROUP]: alpha x the scheduled lr
COUNTERS = ("hgrad_nonfinite", "meta_skipped")

# --- fairseq's own ----------------------------------------------------------------------
NUM_UPDATES, UPS, WPS, WALL, LOSS, BLEU = "num_updates", "ups", "wps", "wall", "loss", "bleu"
VALID_PREFIX = "valid_"  # --log-format json prefixes a validation's fields with its subset

# what the readers take from a train_inner row of a run that learns alpha and beta1 (with
# --guidance-time-pass), and from a validation row (with --eval-bleu)
READ_TRAIN = (NUM_UPDATES, UPS, WPS, WALL, ALPHA, BETA1, GUIDE_LOSS, META_MS, PASS_MS)
READ_VALID = (NUM_UPDATES, LOSS, BLEU)


def is_learned(key: str) -> bool:
    """Whether a logged key is a learned value (guided_beta1, guided_alpha/encoder), not
    another key of the same prefix (the plugin's guided_skipped, guided_rank_drift)."""
    return key.startswith(LEARNED_PREFIX) and key[len(LEARNED_PREFIX):].partition("/")[0] in LEARNED_NAMES


def learned_name(key: str) -> str:
    """'guided_alpha/encoder' -> 'alpha/encoder'."""
    return key[len(LEARNED_PREFIX):]


def plugin_keys(learned, groups=(), timed=False) -> set:
    """Every key the plugin writes to a train_inner row of a heldout-guided run that learns
    `learned` (names) in `groups` (none: one global value each); `timed`: --guidance-time-pass."""
    suffixes = [f"/{g}" for g in groups] or [""]
    keys = {GUIDE_LOSS, *COUNTERS} | {EFF_LR + s for s in suffixes}
    keys |= {p + n + s for p in (LEARNED_PREFIX, HGRAD_PREFIX) for n in learned for s in suffixes}
    return keys | ({META_MS, PASS_MS} if timed else set())
