"""`--task guided_translation`: fairseq's translation task plus the guidance meta step."""

import logging
from dataclasses import dataclass

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..guidance.config import GuidanceConfig, check_guidance_fits, check_split_files, validate_guidance_config
from ..guidance.runner import GuidanceRunner
from ..guidance.task import GuidedTaskMixin

logger = logging.getLogger(__name__)


@dataclass
class GuidedTranslationConfig(TranslationConfig, GuidanceConfig):
    pass


@register_task("guided_translation", dataclass=GuidedTranslationConfig)
class GuidedTranslationTask(GuidedTaskMixin, TranslationTask):
    """Translation whose optimizer hyper-parameters are learned from a held-out split."""

    cfg: GuidedTranslationConfig

    def __init__(self, cfg, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.guidance = GuidanceRunner(self, cfg)

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        validate_guidance_config(cfg)
        task = super().setup_task(cfg, **kwargs)
        if cfg.guidance_source == "heldout":
            check_split_files(cfg.data, cfg.guidance_subset,
                              {cfg.source_lang: task.src_dict, cfg.target_lang: task.tgt_dict})
            try:  # fail now, not at the first update
                task.load_dataset(cfg.guidance_subset, combine=False, epoch=1)
            except FileNotFoundError as e:
                raise ValueError(
                    f"--guidance-subset: no split {cfg.guidance_subset!r} in {cfg.data} "
                    f"({e}); binarize one with fairseq-preprocess (e.g. --validpref for "
                    f"the held-out pairs and rename), or use --guidance-source train"
                ) from None
            if len(task.dataset(cfg.guidance_subset)) == 0:
                raise ValueError(f"--guidance-subset {cfg.guidance_subset!r} is empty")
            check_guidance_fits(task, cfg)
        return task
