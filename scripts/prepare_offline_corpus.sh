#!/usr/bin/env bash
# Build a real parallel corpus from Debian's archive (no other internet needed): LibreOffice's
# offline help, paragraphs aligned exactly by (file, id), optionally plus Debian's
# translated package descriptions; then the same clean / split / sentencepiece / fairseq
# stages as scripts/prepare_wmt19.sh.
#
#   bash scripts/prepare_offline_corpus.sh [options]
#
#   --pair P          de-en (default), fr-en or fi-en; en-de, en-fr, en-fi reverse it
#   --with-debian     add Debian package descriptions (synopses, and paragraphs where
#                     both versions have the same number) to the corpus; then there is
#                     no held-out Debian test set (--debian-test-size must be 0)
#   --debian-test-size N  held-out domain test set test_debian: N Debian description
#                     pairs, never trained on (default 1000; 0: none). Needs apt's
#                     Translation-* lists; without them the script stops (say 0 to go on)
#   --dest DIR        output folder (default: data/libreoffice-PAIR in the repository)
#   --vocab-size N    joint sentencepiece vocabulary (default 8000: small enough for CPU)
#   --valid-size N    pairs drawn at random for valid (default 1000)
#   --test-size N     pairs drawn at random for test (default 1000)
#   --guide-every N   every Nth remaining pair goes to guide, not train (default 100)
#   --seed N          draw of valid/test (default 1)
#   --max-words N     drop pairs with a side longer than N words (default 250)
#   --max-ratio R     drop pairs whose character lengths (plus the floor) differ more than
#   --ratio-floor N   R times (defaults 1.5 and 20)
#   --cache-dir DIR   .deb files and private apt lists (default: DEST/download)
#   --workers N       fairseq-preprocess workers (default: one a core)
#   -h, --help        this text
#
# Stages (each skips itself, printing "skip", while its inputs and options are unchanged;
# each prints its counts and time; delete DEST/.stamps/STAGE.json to force one, e.g. after
# changing the code): download (apt-get download / apt-get update into a
# private lists folder: no root needed, system state untouched), extract (dpkg-deb -x and
# alignment), clean (empty, length, ratio, identical source and target, duplicate pairs),
# split, spm_train, spm_encode, binarize, debian_test.
#
# Output layout (SRC/TGT are language codes, e.g. de and en):
#   DEST/raw/{train,valid,test,guide}.{SRC,TGT}   detokenized text, one sentence a line;
#                     no sentence of valid/test is in train/guide, no pair is in both
#                     train and guide
#   DEST/{raw,spm,bin}/test_debian.*   the held-out Debian test set: no sentence of it is
#                     in any other split; same sentencepiece model and dictionary
#   DEST/spm.model, DEST/spm.vocab   joint sentencepiece model, trained on raw/train only
#   DEST/spm/{split}.{SRC,TGT}       the pieces fairseq-preprocess read
#   DEST/bin/         fairseq-preprocess --joined-dictionary output: dict.SRC.txt,
#                     dict.TGT.txt, {train,valid,test,guide}.SRC-TGT.{SRC,TGT}.{bin,idx}
#   DEST/work/        intermediate text; DEST/.stamps/ what each stage did
#
# Scoring a model on the real references (sentencepiece removed by fairseq):
#   fairseq-generate DEST/bin --gen-subset test --path CKPT --post-process sentencepiece \
#     | grep ^H- | sort -t- -k2,2n | cut -f3 > hyp.TGT
#   sacrebleu DEST/raw/test.TGT < hyp.TGT
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/datalib_common.sh"

pair=de-en with_debian= dest= vocab_size=8000 valid_size=1000 test_size=1000 guide_every=100
seed=1 max_words=250 max_ratio=1.5 ratio_floor=20 cache= workers=0 drop_identical=1 debian_test_size=
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) print_help; exit 0 ;;
    --with-debian) with_debian=1; shift; continue ;;
    --pair|--dest|--vocab-size|--valid-size|--test-size|--guide-every|--seed|--max-words|\
    --max-ratio|--ratio-floor|--cache-dir|--workers|--debian-test-size) need_value "$1" "${2:-}" ;;&
    --pair) pair=$2 ;;
    --dest) dest=$2 ;;
    --vocab-size) vocab_size=$2 ;;
    --valid-size) valid_size=$2 ;;
    --test-size) test_size=$2 ;;
    --guide-every) guide_every=$2 ;;
    --seed) seed=$2 ;;
    --max-words) max_words=$2 ;;
    --max-ratio) max_ratio=$2 ;;
    --ratio-floor) ratio_floor=$2 ;;
    --cache-dir) cache=$2 ;;
    --workers) workers=$2 ;;
    --debian-test-size) debian_test_size=$2 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift 2
done

case $pair in
  de-en|en-de|fr-en|en-fr|fi-en|en-fi) ;;
  *) die "unknown pair '$pair' (known: de-en, fr-en, fi-en and their reverses)" ;;
esac
for opt in vocab-size valid-size test-size guide-every max-words; do
  var=${opt//-/_}; need_count "--$opt" "${!var}"
done
# Debian descriptions are either training data or the held-out domain, never both.
if [ -n "$with_debian" ]; then
  case ${debian_test_size:-0} in 0) debian_test_size=0 ;;
    *) die "--with-debian trains on Debian descriptions: no held-out Debian test set (--debian-test-size 0)" ;; esac
fi
debian_test_size=${debian_test_size:-1000}
case $debian_test_size in ''|*[!0-9]*) die "option --debian-test-size needs a whole number >= 0" ;; esac
[ "$debian_test_size" = 0 ] && debian_test= || debian_test=1
src=${pair%-*} tgt=${pair#*-}
x=$src; [ "$x" = en ] && x=$tgt
dest=${dest:-$repo/data/libreoffice-$pair}
cache=${cache:-$dest/download}
mkdir -p "$dest" "$cache"
dest=$(cd "$dest" && pwd) cache=$(cd "$cache" && pwd)
find_python
need_tool apt-get "Debian's package tool, to download the help packages"
need_tool dpkg-deb "to unpack the .deb files"
start=$(date +%s)
echo "== LibreOffice help $pair${with_debian:+ + Debian descriptions} -> $dest"

# -- download: the two help packages (and the Translation indexes) into the cache ---------
packages=("libreoffice-help-$x" libreoffice-help-en-us)
lists=$cache/apt-lists
apt_opts=(-o "Dir::State::Lists=$lists" -o "Dir::Cache=$cache/apt-cache"
          -o "Acquire::Languages=en,$x" -q)
# apt hands downloads to the unprivileged _apt user, who cannot write into a folder of root's.
[ "$(id -u)" = 0 ] && apt_opts+=(-o APT::Sandbox::User=root)
have_debs() {  # every package there and whole; damaged ones are deleted, so they are fetched again
  local p f ok=0
  for p in "${packages[@]}"; do
    ls "$cache/debs/${p}"_*.deb >/dev/null 2>&1 || { ok=1; continue; }
    for f in "$cache/debs/${p}"_*.deb; do
      deb_intact "$f" && continue
      echo "[download] $f is damaged (an interrupted download?): fetching it again"
      rm -f "$f"
      ok=1
    done
  done
  return $ok
}
have_lists() { ls "$lists"/*_i18n_Translation-en* "$lists"/*_i18n_Translation-"$x"* >/dev/null 2>&1; }
t0=$(date +%s)
if have_debs && { [ -z "$with_debian$debian_test" ] || have_lists; }; then
  echo "[download] skip: packages${with_debian:+ and Translation indexes} already in $cache"
else
  mkdir -p "$lists/partial" "$cache/apt-cache/archives/partial" "$cache/debs"
  apt-get "${apt_opts[@]}" update >/dev/null || die "apt-get update failed (is Debian's archive reachable?)"
  (cd "$cache/debs" && apt-get "${apt_opts[@]}" download "${packages[@]}" >/dev/null) \
    || die "apt-get download ${packages[*]} failed"
  downloaded=1
fi
debs=()
for p in "${packages[@]}"; do debs+=("$(ls "$cache/debs/${p}"_*.deb | sort -V | tail -n1)"); done
for f in "${debs[@]}"; do deb_intact "$f" || die "$f is damaged even after downloading it again"; done
[ -n "${downloaded:-}" ] && echo "[download] done in $(( $(date +%s) - t0 )) s: $(basename -a "${debs[@]}" | tr '\n' ' ')"

# -- extract + shared stages ----------------------------------------------------------------
datalib offline-extract --pair "$pair" --dest "$dest" --debs "${debs[@]}" \
  ${with_debian:+--lists-dir "$lists"}
common_stages "$dest" "$src" "$tgt"
if [ -n "$debian_test" ]; then
  datalib debian-test --dest "$dest" --src "$src" --tgt "$tgt" --lists-dir "$lists" \
    --size "$debian_test_size" --seed "$seed" --max-words "$max_words" --max-ratio "$max_ratio" \
    --ratio-floor "$ratio_floor" ${drop_identical:+--drop-identical}
fi
echo "== done in $(( $(date +%s) - start )) s: $dest/bin (fairseq data), $dest/raw (text)"
