#!/usr/bin/env bash
# Prepare a WMT19 news-task pair of the paper for fairseq: de-en, fi-en, lt-en, either
# direction (en-de, en-fi, en-lt).
#
#   bash scripts/prepare_wmt19.sh --pair de-en [options]
#
#   --pair P          de-en, en-de, fi-en, en-fi, lt-en or en-lt (required)
#   --dest DIR        output folder (default: data/wmt19-PAIR in the repository)
#   --raw-dir DIR     use files already downloaded into DIR, named and packed as WMT ships
#                     them (see below), and skip the download stage; files already
#                     unpacked to DIR/MEMBER (e.g. DIR/dev/newstest2018-deen-src.de.sgm)
#                     are used as well
#   --corpora LIST    comma-separated subset of the pair's training corpora (default: all)
#   --skip-checksum F comma-separated files whose md5 is not compared with the published
#                     one (dev.tgz, test.tgz): for a newer release of the file. Every
#                     archive is still read through once and its CRCs checked.
#   --download-only   stop after the download stage
#   --vocab-size N    joint sentencepiece vocabulary (default 32000)
#   --guide-every N   every Nth cleaned training pair goes to guide, not train (default 100)
#   --max-words N     drop pairs with a side longer than N words (default 250)
#   --max-ratio R     drop pairs whose character lengths (plus the floor) differ more than
#   --ratio-floor N   R times (defaults 1.5 and 20)
#   --workers N       fairseq-preprocess workers (default: one a core)
#   -h, --help        this text
#
# Raw files (download stage: curl or wget into DEST/download; URLs from `python -m guided_recipes.datalib
# wmt19-urls --pair P`), as on statmt.org's WMT19 task page:
#   all pairs:   europarl-v9.X-en.tsv.gz (europarl_v9), en-X.bicleaner07.tmx.gz
#                (paracrawl_v3), wikititles-v1.X-en.tsv.gz (wikititles_v1)
#   de-en:       training-parallel-commoncrawl.tgz (commoncrawl),
#                news-commentary-v14.de-en.tsv.gz (news_commentary_v14),
#                rapid2019.de-en.zip (rapid_2019)
#   fi-en/lt-en: rapid2016.en-X.tmx.zip (rapid_2016)
#   dev.tgz      valid = dev/newstest2018-* (newsdev2019-* for lt), the translation
#                direction's files, else the reverse direction's (same sentences)
#   test.tgz     test = sgm/newstest2019-SRCTGT-{src,ref}.*.sgm (source-original)
#
# Stages (each skips itself, printing "skip", while its inputs and options are unchanged;
# each prints its counts and time; delete DEST/.stamps/STAGE.json to force one, e.g. after
# changing the code): download, verify (md5, archives read whole), extract (to plain text; sgm exactly as
# sacrebleu reads it), clean (empty, length, ratio, duplicate pairs; valid/test are kept
# whole), split (every Nth pair to guide), spm_train, spm_encode, binarize. The last five
# are the same code as scripts/prepare_offline_corpus.sh; its header documents the output
# layout (DEST/raw, DEST/spm.model, DEST/bin, with guide a split of its own).
#
# Scoring: raw/test.TGT is sacrebleu's wmt19 reference, so
#   sacrebleu -t wmt19 -l SRC-TGT < hyp.TGT   and   sacrebleu DEST/raw/test.TGT < hyp.TGT
# give the same score.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/datalib_common.sh"

pair= dest= raw_dir= corpora= skip_checksum= download_only= vocab_size=32000 guide_every=100
max_words=250 max_ratio=1.5 ratio_floor=20 workers=0
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) print_help; exit 0 ;;
    --download-only) download_only=1; shift; continue ;;
    --pair|--dest|--raw-dir|--corpora|--skip-checksum|--vocab-size|--guide-every|--max-words|--max-ratio|\
    --ratio-floor|--workers) need_value "$1" "${2:-}" ;;&
    --pair) pair=$2 ;;
    --dest) dest=$2 ;;
    --raw-dir) raw_dir=$2 ;;
    --corpora) corpora=$2 ;;
    --skip-checksum) skip_checksum=$2 ;;
    --vocab-size) vocab_size=$2 ;;
    --guide-every) guide_every=$2 ;;
    --max-words) max_words=$2 ;;
    --max-ratio) max_ratio=$2 ;;
    --ratio-floor) ratio_floor=$2 ;;
    --workers) workers=$2 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift 2
done
[ -n "$pair" ] || die "--pair is required (de-en, en-de, fi-en, en-fi, lt-en or en-lt)"
case $pair in
  de-en|en-de|fi-en|en-fi|lt-en|en-lt) ;;
  *) die "unknown pair '$pair' (known: de-en, en-de, fi-en, en-fi, lt-en, en-lt)" ;;
esac
for opt in vocab-size guide-every max-words; do
  var=${opt//-/_}; need_count "--$opt" "${!var}"
done
[ -z "$raw_dir" ] || [ -d "$raw_dir" ] || die "missing raw folder $raw_dir"
src=${pair%-*} tgt=${pair#*-}
dest=${dest:-$repo/data/wmt19-$pair}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
find_python
start=$(date +%s)
echo "== WMT19 $pair -> $dest"

# -- download (only without --raw-dir) ---------------------------------------------------
if [ -n "$raw_dir" ]; then
  echo "[download] skip: using --raw-dir $raw_dir"
else
  raw_dir=$dest/download
  mkdir -p "$raw_dir"
  if command -v curl >/dev/null 2>&1; then fetch() { curl -fL --retry 3 -o "$2" "$1"; }
  elif command -v wget >/dev/null 2>&1; then fetch() { wget -q --tries=3 -O "$2" "$1"; }
  else die "missing tool 'curl' or 'wget' (to download; or pass --raw-dir)"; fi
  t0=$(date +%s) got=0 had=0
  while read -r url file; do
    if [ -s "$raw_dir/$file" ]; then had=$((had + 1)); continue; fi
    echo "[download] $url"
    # Into a .part file first, so an interrupted download is retried, not used.
    fetch "$url" "$raw_dir/$file.part" || die "download failed: $url"
    mv "$raw_dir/$file.part" "$raw_dir/$file"
    got=$((got + 1))
  done < <(datalib wmt19-urls --pair "$pair" --corpora "$corpora")
  if [ $got = 0 ]; then echo "[download] skip: all $had files already in $raw_dir"
  else echo "[download] done in $(( $(date +%s) - t0 )) s: $got files fetched, $had already there"; fi
fi
raw_dir=$(cd "$raw_dir" && pwd)
# -- verify: downloaded or supplied, every archive is checked the same way before use: the
# published md5 where there is one, and one read through every archive (CRCs, truncation,
# an error page saved under an archive's name). Remembered per file (size, mtime).
datalib wmt19-verify --pair "$pair" --dest "$dest" --raw-dir "$raw_dir" --corpora "$corpora" \
  --skip-checksum "$skip_checksum"
[ -z "$download_only" ] || exit 0

# -- extract + shared stages ----------------------------------------------------------------
datalib wmt19-extract --pair "$pair" --dest "$dest" --raw-dir "$raw_dir" --corpora "$corpora"
common_stages "$dest" "$src" "$tgt"
echo "== done in $(( $(date +%s) - start )) s: $dest/bin (fairseq data), $dest/raw (text)"
