# Shell helpers shared by scripts/prepare_*.sh (sourced, not run). The stages themselves
# are Python (python -m guided_recipes.datalib STAGE), so both corpora go through the same code.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prog=$(basename "$0")

die() { echo "$prog: error: $*" >&2; exit 1; }

need_tool() {  # need_tool NAME [WHAT IT IS FOR]
  command -v "$1" >/dev/null 2>&1 || die "missing tool '$1'${2:+ ($2)}"
}

# The project's venv if there is one, so fairseq-preprocess and sentencepiece match the
# fairseq that trains on the result; $PYTHON overrides.
find_python() {
  py=${PYTHON:-}
  if [ -z "$py" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then py=$repo/.venv/bin/python; else py=python3; fi
  fi
  need_tool "$py" "Python 3.11+ with sentencepiece and numpy"
  "$py" -c 'import sentencepiece, numpy' 2>/dev/null \
    || die "missing Python module sentencepiece or numpy for $py (set PYTHON=...)"
  [ -x "$(dirname "$(command -v "$py")")/fairseq-preprocess" ] || need_tool fairseq-preprocess "from fairseq"
}

datalib() {  # datalib STAGE ARGS...: one Python stage; its own error line is enough
  DATALIB_PROG=$prog PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" \
    "$py" -m guided_recipes.datalib "$@" || exit 1
}

deb_intact() {  # deb_intact FILE: the whole package reads back (an interrupted download does not)
  dpkg-deb --fsys-tarfile "$1" >/dev/null 2>&1
}

need_value() {  # need_value OPTION VALUE: an option given without its value
  [ -n "${2:-}" ] || die "option $1 needs a value (see --help)"
}

need_count() {  # need_count OPTION VALUE: a whole number >= 1
  case $2 in ''|*[!0-9]*|0) die "option $1 needs a whole number >= 1, not '$2'" ;; esac
}

print_help() {  # the comment block at the top of the script, without the '# '
  sed -n '2,/^[^#]/{/^#/!q;s/^# \{0,1\}//;p}' "$0"
}

# Stages after extraction: identical for every corpus.
common_stages() {  # common_stages DEST SRC TGT  (uses the clean/split/spm/bin variables)
  local d=$1 s=$2 t=$3
  datalib clean --dest "$d" --src "$s" --tgt "$t" --max-words "$max_words" \
    --max-ratio "$max_ratio" --ratio-floor "$ratio_floor" ${drop_identical:+--drop-identical}
  datalib split --dest "$d" --src "$s" --tgt "$t" --guide-every "$guide_every" \
    --valid-size "${valid_size:-0}" --test-size "${test_size:-0}" --seed "${seed:-1}"
  datalib spm-train --dest "$d" --src "$s" --tgt "$t" --vocab-size "$vocab_size"
  datalib spm-encode --dest "$d" --src "$s" --tgt "$t"
  datalib binarize --dest "$d" --src "$s" --tgt "$t" --workers "${workers:-0}"
}
