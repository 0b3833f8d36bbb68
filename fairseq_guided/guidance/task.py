"""GuidedTaskMixin: the fairseq task hooks every guided task shares."""
from .. import channels
from .runner import GuidanceRunner


class GuidedTaskMixin:
    """The fairseq task hooks every guided task shares (model, criterion, epoch start, train
    step, optimizer step); list it before the stock task class (class
    MyTask(GuidedTaskMixin, TranslationTask)) and set self.guidance in __init__."""

    guidance: GuidanceRunner

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        channels.record_layout("model", model)  # what flat --fp16 will flatten
        return model

    def build_criterion(self, cfg, from_checkpoint=False):
        criterion = super().build_criterion(cfg, from_checkpoint)
        channels.record_layout("criterion", criterion)
        return criterion

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        self.guidance.set_epoch(epoch)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        self.guidance.bind(optimizer)  # refuse a stock optimizer before any update
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def optimizer_step(self, optimizer, model, update_num):
        self.guidance.optimizer_step(optimizer, model, update_num)
