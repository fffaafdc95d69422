"""The task every TinyGPT-V / MiniGPT stage uses: next-token loss on answers, generation-based evaluation."""

from minigpt.tasks.base_task import BaseTask


class ImageTextPretrainTask(BaseTask):
    """Image-text training on the one sample schema (captions, VQA, grounding, conversations).

    YAML name ``image_text_pretrain``. Evaluation scores each sample by its ``task`` field:
    VQA accuracy, grounding Acc@0.5 IoU, identify accuracy, caption exact match and BLEU-4 (NLTK, ``caption_bleu4_nltk``).
    """
