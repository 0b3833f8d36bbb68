#!/bin/bash
# t.sh NAME THREADS EXTRA...
name=$1; th=$2; shift 2
cd "$(dirname "$0")/../.."; out=runs/tp/$name; rm -rf $out; mkdir -p $out
s=$(date +%s.%N)
OMP_NUM_THREADS=$th MKL_NUM_THREADS=$th .venv/bin/fairseq-train data/libreoffice-de-en/bin --user-dir fairseq_guided --task guided_translation --source-lang de --target-lang en \
  --arch transformer --encoder-normalize-before --decoder-normalize-before --share-all-embeddings \
  --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4 \
  --optimizer guided_lamb --lamb-betas '(0.9, 0.999)' --weight-decay 0.01 --lr 0.01 --lr-scheduler inverse_sqrt --warmup-updates 200 --warmup-init-lr 1e-7 \
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-update 200 --seed 1 --max-tokens 2048 --guidance-max-tokens 512 \
  --save-dir $out/ckpt --no-save --disable-validation --log-format json --log-interval 25 --num-workers 0 "$@" > $out/train.log 2>&1
e=$(date +%s.%N); echo "$name $(echo "$e - $s" | bc) s" | tee $out/time
