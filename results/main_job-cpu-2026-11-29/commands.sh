# prepare
bash $REPO/scripts/prepare_offline_corpus.sh --dest $REPO/data/libreoffice-de-en --vocab-size 8000

# train base seed 1
$REPO/.venv/bin/fairseq-hydra-train --config-dir $REPO/configs/nmt --config-name cpu task.data=$REPO/data/libreoffice-de-en/bin common.user_dir=$REPO/fairseq_guided task.source_lang=de task.target_lang=en common.seed=1 checkpoint.save_dir=$REPO/runs/main_job-cpu/base-seed1/checkpoints common.log_file=$REPO/runs/main_job-cpu/base-seed1/train.log hydra.run.dir=$REPO/runs/main_job-cpu/base-seed1 hydra.output_subdir=null
# evaluate on test (hypotheses sorted by id, scored by sacrebleu against raw/test.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/base-seed1/checkpoints/checkpoint_last.pt --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
# evaluate on test_debian (hypotheses sorted by id, scored by sacrebleu against raw/test_debian.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/base-seed1/checkpoints/checkpoint_last.pt --gen-subset test_debian --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10

# train alpha seed 1
$REPO/.venv/bin/fairseq-hydra-train --config-dir $REPO/configs/nmt --config-name cpu task.data=$REPO/data/libreoffice-de-en/bin common.user_dir=$REPO/fairseq_guided task.source_lang=de task.target_lang=en common.seed=1 checkpoint.save_dir=$REPO/runs/main_job-cpu/alpha-seed1/checkpoints common.log_file=$REPO/runs/main_job-cpu/alpha-seed1/train.log hydra.run.dir=$REPO/runs/main_job-cpu/alpha-seed1 hydra.output_subdir=null optimizer.guided_hparams=alpha
# evaluate on test (hypotheses sorted by id, scored by sacrebleu against raw/test.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/alpha-seed1/checkpoints/checkpoint_last.pt --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
# evaluate on test_debian (hypotheses sorted by id, scored by sacrebleu against raw/test_debian.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/alpha-seed1/checkpoints/checkpoint_last.pt --gen-subset test_debian --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10

# train beta1 seed 1
$REPO/.venv/bin/fairseq-hydra-train --config-dir $REPO/configs/nmt --config-name cpu task.data=$REPO/data/libreoffice-de-en/bin common.user_dir=$REPO/fairseq_guided task.source_lang=de task.target_lang=en common.seed=1 checkpoint.save_dir=$REPO/runs/main_job-cpu/beta1-seed1/checkpoints common.log_file=$REPO/runs/main_job-cpu/beta1-seed1/train.log hydra.run.dir=$REPO/runs/main_job-cpu/beta1-seed1 hydra.output_subdir=null optimizer.guided_hparams=beta1
# evaluate on test (hypotheses sorted by id, scored by sacrebleu against raw/test.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/beta1-seed1/checkpoints/checkpoint_last.pt --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
# evaluate on test_debian (hypotheses sorted by id, scored by sacrebleu against raw/test_debian.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/beta1-seed1/checkpoints/checkpoint_last.pt --gen-subset test_debian --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10

# train alpha+beta1 seed 1
$REPO/.venv/bin/fairseq-hydra-train --config-dir $REPO/configs/nmt --config-name cpu task.data=$REPO/data/libreoffice-de-en/bin common.user_dir=$REPO/fairseq_guided task.source_lang=de task.target_lang=en common.seed=1 checkpoint.save_dir=$REPO/runs/main_job-cpu/alpha+beta1-seed1/checkpoints common.log_file=$REPO/runs/main_job-cpu/alpha+beta1-seed1/train.log hydra.run.dir=$REPO/runs/main_job-cpu/alpha+beta1-seed1 hydra.output_subdir=null 'optimizer.guided_hparams=alpha\,beta1'
# evaluate on test (hypotheses sorted by id, scored by sacrebleu against raw/test.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/alpha+beta1-seed1/checkpoints/checkpoint_last.pt --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
# evaluate on test_debian (hypotheses sorted by id, scored by sacrebleu against raw/test_debian.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/alpha+beta1-seed1/checkpoints/checkpoint_last.pt --gen-subset test_debian --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10

# train base seed 2
$REPO/.venv/bin/fairseq-hydra-train --config-dir $REPO/configs/nmt --config-name cpu task.data=$REPO/data/libreoffice-de-en/bin common.user_dir=$REPO/fairseq_guided task.source_lang=de task.target_lang=en common.seed=2 checkpoint.save_dir=$REPO/runs/main_job-cpu/base-seed2/checkpoints common.log_file=$REPO/runs/main_job-cpu/base-seed2/train.log hydra.run.dir=$REPO/runs/main_job-cpu/base-seed2 hydra.output_subdir=null
# evaluate on test (hypotheses sorted by id, scored by sacrebleu against raw/test.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/base-seed2/checkpoints/checkpoint_last.pt --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
# evaluate on test_debian (hypotheses sorted by id, scored by sacrebleu against raw/test_debian.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/base-seed2/checkpoints/checkpoint_last.pt --gen-subset test_debian --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10

# train alpha seed 2
$REPO/.venv/bin/fairseq-hydra-train --config-dir $REPO/configs/nmt --config-name cpu task.data=$REPO/data/libreoffice-de-en/bin common.user_dir=$REPO/fairseq_guided task.source_lang=de task.target_lang=en common.seed=2 checkpoint.save_dir=$REPO/runs/main_job-cpu/alpha-seed2/checkpoints common.log_file=$REPO/runs/main_job-cpu/alpha-seed2/train.log hydra.run.dir=$REPO/runs/main_job-cpu/alpha-seed2 hydra.output_subdir=null optimizer.guided_hparams=alpha
# evaluate on test (hypotheses sorted by id, scored by sacrebleu against raw/test.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/alpha-seed2/checkpoints/checkpoint_last.pt --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
# evaluate on test_debian (hypotheses sorted by id, scored by sacrebleu against raw/test_debian.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/alpha-seed2/checkpoints/checkpoint_last.pt --gen-subset test_debian --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10

# train beta1 seed 2
$REPO/.venv/bin/fairseq-hydra-train --config-dir $REPO/configs/nmt --config-name cpu task.data=$REPO/data/libreoffice-de-en/bin common.user_dir=$REPO/fairseq_guided task.source_lang=de task.target_lang=en common.seed=2 checkpoint.save_dir=$REPO/runs/main_job-cpu/beta1-seed2/checkpoints common.log_file=$REPO/runs/main_job-cpu/beta1-seed2/train.log hydra.run.dir=$REPO/runs/main_job-cpu/beta1-seed2 hydra.output_subdir=null optimizer.guided_hparams=beta1
# evaluate on test (hypotheses sorted by id, scored by sacrebleu against raw/test.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/beta1-seed2/checkpoints/checkpoint_last.pt --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
# evaluate on test_debian (hypotheses sorted by id, scored by sacrebleu against raw/test_debian.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/beta1-seed2/checkpoints/checkpoint_last.pt --gen-subset test_debian --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10

# train alpha+beta1 seed 2
$REPO/.venv/bin/fairseq-hydra-train --config-dir $REPO/configs/nmt --config-name cpu task.data=$REPO/data/libreoffice-de-en/bin common.user_dir=$REPO/fairseq_guided task.source_lang=de task.target_lang=en common.seed=2 checkpoint.save_dir=$REPO/runs/main_job-cpu/alpha+beta1-seed2/checkpoints common.log_file=$REPO/runs/main_job-cpu/alpha+beta1-seed2/train.log hydra.run.dir=$REPO/runs/main_job-cpu/alpha+beta1-seed2 hydra.output_subdir=null 'optimizer.guided_hparams=alpha\,beta1'
# evaluate on test (hypotheses sorted by id, scored by sacrebleu against raw/test.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/alpha+beta1-seed2/checkpoints/checkpoint_last.pt --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
# evaluate on test_debian (hypotheses sorted by id, scored by sacrebleu against raw/test_debian.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/alpha+beta1-seed2/checkpoints/checkpoint_last.pt --gen-subset test_debian --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10

# train base seed 3
$REPO/.venv/bin/fairseq-hydra-train --config-dir $REPO/configs/nmt --config-name cpu task.data=$REPO/data/libreoffice-de-en/bin common.user_dir=$REPO/fairseq_guided task.source_lang=de task.target_lang=en common.seed=3 checkpoint.save_dir=$REPO/runs/main_job-cpu/base-seed3/checkpoints common.log_file=$REPO/runs/main_job-cpu/base-seed3/train.log hydra.run.dir=$REPO/runs/main_job-cpu/base-seed3 hydra.output_subdir=null
# evaluate on test (hypotheses sorted by id, scored by sacrebleu against raw/test.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/base-seed3/checkpoints/checkpoint_last.pt --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
# evaluate on test_debian (hypotheses sorted by id, scored by sacrebleu against raw/test_debian.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/base-seed3/checkpoints/checkpoint_last.pt --gen-subset test_debian --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10

# train alpha seed 3
$REPO/.venv/bin/fairseq-hydra-train --config-dir $REPO/configs/nmt --config-name cpu task.data=$REPO/data/libreoffice-de-en/bin common.user_dir=$REPO/fairseq_guided task.source_lang=de task.target_lang=en common.seed=3 checkpoint.save_dir=$REPO/runs/main_job-cpu/alpha-seed3/checkpoints common.log_file=$REPO/runs/main_job-cpu/alpha-seed3/train.log hydra.run.dir=$REPO/runs/main_job-cpu/alpha-seed3 hydra.output_subdir=null optimizer.guided_hparams=alpha
# evaluate on test (hypotheses sorted by id, scored by sacrebleu against raw/test.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/alpha-seed3/checkpoints/checkpoint_last.pt --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
# evaluate on test_debian (hypotheses sorted by id, scored by sacrebleu against raw/test_debian.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/alpha-seed3/checkpoints/checkpoint_last.pt --gen-subset test_debian --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10

# train beta1 seed 3
$REPO/.venv/bin/fairseq-hydra-train --config-dir $REPO/configs/nmt --config-name cpu task.data=$REPO/data/libreoffice-de-en/bin common.user_dir=$REPO/fairseq_guided task.source_lang=de task.target_lang=en common.seed=3 checkpoint.save_dir=$REPO/runs/main_job-cpu/beta1-seed3/checkpoints common.log_file=$REPO/runs/main_job-cpu/beta1-seed3/train.log hydra.run.dir=$REPO/runs/main_job-cpu/beta1-seed3 hydra.output_subdir=null optimizer.guided_hparams=beta1
# evaluate on test (hypotheses sorted by id, scored by sacrebleu against raw/test.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/beta1-seed3/checkpoints/checkpoint_last.pt --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
# evaluate on test_debian (hypotheses sorted by id, scored by sacrebleu against raw/test_debian.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/beta1-seed3/checkpoints/checkpoint_last.pt --gen-subset test_debian --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10

# train alpha+beta1 seed 3
$REPO/.venv/bin/fairseq-hydra-train --config-dir $REPO/configs/nmt --config-name cpu task.data=$REPO/data/libreoffice-de-en/bin common.user_dir=$REPO/fairseq_guided task.source_lang=de task.target_lang=en common.seed=3 checkpoint.save_dir=$REPO/runs/main_job-cpu/alpha+beta1-seed3/checkpoints common.log_file=$REPO/runs/main_job-cpu/alpha+beta1-seed3/train.log hydra.run.dir=$REPO/runs/main_job-cpu/alpha+beta1-seed3 hydra.output_subdir=null 'optimizer.guided_hparams=alpha\,beta1'
# evaluate on test (hypotheses sorted by id, scored by sacrebleu against raw/test.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/alpha+beta1-seed3/checkpoints/checkpoint_last.pt --gen-subset test --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
# evaluate on test_debian (hypotheses sorted by id, scored by sacrebleu against raw/test_debian.en)
$REPO/.venv/bin/fairseq-generate $REPO/data/libreoffice-de-en/bin --user-dir $REPO/fairseq_guided --source-lang de --target-lang en --path $REPO/runs/main_job-cpu/alpha+beta1-seed3/checkpoints/checkpoint_last.pt --gen-subset test_debian --beam 4 --batch-size 128 --post-process sentencepiece --required-batch-size-multiple 1 --max-len-a 1.2 --max-len-b 10
