#!/usr/bin/env bash
# calib.sh NAME DATA MAXUPD EVAL_AT... -- EXTRA fairseq-train args
set -u
name=$1; data=$2; maxupd=$3; shift 3
evals=(); while [ "$1" != "--" ]; do evals+=("$1"); shift; done; shift
cd "$(dirname "$0")/../.."; out=runs/calib/$name; mkdir -p $out
B=.venv/bin
if [ ! -f $out/done ]; then
start=$(date +%s)
$B/fairseq-train $data/bin --user-dir fairseq_guided --task guided_translation --source-lang de --target-lang en \
  --arch transformer --encoder-normalize-before --decoder-normalize-before --share-all-embeddings \
  --optimizer guided_lamb --lamb-betas '(0.9, 0.999)' --weight-decay 0.01 --lr-scheduler inverse_sqrt --warmup-init-lr 1e-7 \
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-update $maxupd --seed 1 \
  --save-dir $out/ckpt --no-epoch-checkpoints --save-interval-updates 100 --keep-interval-updates 30 \
  --disable-validation --log-format json --log-interval 50 --num-workers 0 "$@" > $out/train.log 2>&1
echo $(( $(date +%s) - start )) > $out/train_seconds
touch $out/done
fi
for u in "${evals[@]}"; do
  [ -f $out/bleu_$u ] && continue
  s=$(date +%s)
  $B/fairseq-generate $data/bin --user-dir fairseq_guided --source-lang de --target-lang en --path $out/ckpt/checkpoint_1_$u.pt 2>/dev/null \
    --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10 > $out/gen_$u.out 2>&1 || \
  $B/fairseq-generate $data/bin --user-dir fairseq_guided --source-lang de --target-lang en --path $(ls $out/ckpt/checkpoint_*_$u.pt) \
    --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10 > $out/gen_$u.out 2>&1
  grep ^H- $out/gen_$u.out | sed 's/^H-//' | sort -n | cut -f3 > $out/hyp_$u.txt
  $B/sacrebleu $data/raw/test.en -i $out/hyp_$u.txt -b > $out/bleu_$u
  echo "$name upd $u BLEU $(cat $out/bleu_$u) (gen $(( $(date +%s) - s )) s, lines $(wc -l < $out/hyp_$u.txt))"
done
echo "$name train_seconds $(cat $out/train_seconds)"
