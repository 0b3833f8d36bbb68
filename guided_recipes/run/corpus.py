"""The real offline de-en corpus that the main job and the sweep train on: where a preset's
copy lives and how it is prepared (scripts/prepare_offline_corpus.sh, whose Python stages
are guided_recipes.datalib)."""
import subprocess
from pathlib import Path

from ..common import OFFLINE_CORPUS, REPO


def data_dir(preset, given: Path = None) -> Path:
    """`given`, or data/libreoffice-de-en (8k vocabulary) / data/libreoffice-de-en-VOCAB."""
    if given is not None:
        return Path(given)
    suffix = "" if preset.vocab_size == 8000 else f"-{preset.vocab_size}"
    return OFFLINE_CORPUS.with_name(OFFLINE_CORPUS.name + suffix)


def prepare(data_dir: Path, preset) -> list:
    """Prepare (or finish preparing) the corpus in data_dir; returns the command it ran."""
    cmd = ["bash", str(REPO / "scripts" / "prepare_offline_corpus.sh"), "--dest", str(data_dir),
           "--vocab-size", str(preset.vocab_size), *preset.data_options]
    subprocess.run(cmd, check=True)
    return cmd


def prepared(data_dir: Path) -> bool:
    """Whether data_dir holds a prepared corpus (bin/ and raw/): what --no-prepare needs."""
    return (Path(data_dir) / "bin").is_dir() and (Path(data_dir) / "raw").is_dir()
