"""The committed results can be re-run and re-scored anywhere: no record names a folder of
the machine it ran on, the rewriting tool does what it says, and every committed test BLEU
is what sacrebleu gives for the committed hypotheses against the real references (the CPU
corpus, prepared here as the main job prepares it)."""
import json
import re
import subprocess
import sys

import pytest

from conftest import ENV, REPO

sys.path.insert(0, str(REPO))
from guided_recipes.report import portable  # noqa: E402
from guided_recipes.run import nmt  # noqa: E402

RESULTS = REPO / "results"
# fairseq's own default --plasma-path, printed in every logged config: not a folder of ours
FAIRSEQ_DEFAULTS = ("/tmp/plasma",)
MACHINE_PATH = re.compile(r"(?<![\w.$-])/(work|root|home|tmp|mnt|srv|opt|var)/[\w.+-]+")


def test_no_committed_record_names_a_folder_of_the_machine_it_ran_on():
    found = []
    for path in RESULTS.rglob("*"):
        # pictures, the sweep's optuna database, and a checkpoint kept to resume a run (fairseq
        # pickles the config it trained with into it; the resumed run uses its own)
        if path.is_file() and path.suffix not in (".png", ".db", ".pt"):
            text = path.read_text(errors="replace")
            found += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in MACHINE_PATH.finditer(text)
                      if not m.group(0).startswith(FAIRSEQ_DEFAULTS)]
    assert not found, found[:10]


def test_rewriting_makes_commands_repo_relative_and_is_idempotent(tmp_path):
    root = "/some/clone"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "commands.sh").write_text(f"{root}/.venv/bin/fairseq-train {root}/data/bin --x {root}\n")
    (tmp_path / "run" / "run.json").write_text(json.dumps({"run": f"{root}/runs/a", "n": 3, "l": [f"{root}/b"]}))
    (tmp_path / "plot.png").write_bytes(b"\x89PNG" + f"{root}/".encode())
    changed = portable.rewrite(tmp_path, [root])
    assert changed == {str(tmp_path / "run" / "commands.sh"): 3, str(tmp_path / "run" / "run.json"): 2}
    assert (tmp_path / "run" / "commands.sh").read_text() == \
        "$REPO/.venv/bin/fairseq-train $REPO/data/bin --x $REPO\n"
    assert json.loads((tmp_path / "run" / "run.json").read_text()) == {"run": "runs/a", "n": 3, "l": ["b"]}
    assert portable.rewrite(tmp_path, [root]) == {}


@pytest.fixture(scope="module")
def cpu_references(tmp_path_factory):
    """raw/ of the main job's corpus: the same script and options as the cpu preset's."""
    dest = tmp_path_factory.mktemp("cpu_corpus") / "libreoffice-de-en"
    preset = nmt.PRESETS["cpu"]
    out = subprocess.run(["bash", str(REPO / "scripts" / "prepare_offline_corpus.sh"), "--dest", str(dest),
                          "--vocab-size", str(preset.vocab_size), *preset.data_options],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    assert out.returncode == 0, out.stdout[-3000:]
    return dest / "raw"


def committed_runs():
    for info in sorted(RESULTS.glob("*-cpu-*/runs/**/run.json")):
        data = json.loads(info.read_text())
        for subset in ("test", "test_debian"):
            if nmt.bleu_key(subset) in data and (info.parent / f"{subset}.hyp.en").is_file():
                yield info.parent, subset, data[nmt.bleu_key(subset)]


def test_every_committed_bleu_is_rescored_from_its_committed_hypotheses(cpu_references):
    import sacrebleu

    runs = list(committed_runs())
    assert len(runs) >= 60  # Table 1, its tuning-free arms and the studies, both test sets
    refs = {s: (cpu_references / f"{s}.en").read_text().splitlines() for s in ("test", "test_debian")}
    for run, subset, bleu in runs:
        hyps = (run / f"{subset}.hyp.en").read_text().splitlines()
        assert len(hyps) == len(refs[subset]), run
        assert sacrebleu.corpus_bleu(hyps, [refs[subset]]).score == pytest.approx(bleu, abs=1e-9), (run, subset)
    table = json.loads((RESULTS / "main_job-cpu-2026-11-29" / "table1.json").read_text())
    for subset, entry in table["subsets"].items():
        for variant, row in entry["rows"].items():
            for seed, bleu in row["bleu"].items():
                info = json.loads((RESULTS / "main_job-cpu-2026-11-29" / "runs" / f"{variant}-seed{seed}" /
                                   "run.json").read_text())
                assert info[nmt.bleu_key(subset)] == bleu
