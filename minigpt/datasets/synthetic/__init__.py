"""A seeded generator of coloured-shape images written in the real datasets' on-disk formats.

``generate_synthetic_dataset(root, ...)`` writes webdataset shards (cc_sbu/laion layout),
MiniGPT-4's ``filter_cap.json``, LAVIS Karpathy-COCO captions and VQA lists, RefCOCO's
``refs(unc).p`` + ``instances.json`` and LLaVA conversations, all describing the same images, so the
library's real dataset readers train and evaluate offline on data whose answers are known.
With ``real_layout=True`` (``--real-layout``) the same data is also laid out where every real
builder's default YAML looks (:mod:`minigpt.datasets.synthetic.real_layout`).
Command line: ``python -m minigpt.datasets.synthetic --out ROOT`` (or ``minigpt-synthetic``).
"""

from minigpt.datasets.synthetic.scenes import (
    COLOURS,
    KINDS,
    POSITION_WORDS,
    QUESTION_TYPES,
    Example,
    Scene,
    box_to_grid,
    format_box,
    iter_examples,
    iter_texts,
    make_caption,
    make_example,
    make_questions,
    position_word,
    referring_expression,
    render_scene,
    sample_scene,
)
from minigpt.datasets.synthetic.writers import (
    CATEGORY_IDS,
    GENERATOR_NAME,
    GENERATOR_VERSION,
    encode_jpeg,
    generate_synthetic_dataset,
    is_complete,
    load_scenes,
)

__all__ = [
    "CATEGORY_IDS",
    "COLOURS",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "KINDS",
    "POSITION_WORDS",
    "QUESTION_TYPES",
    "Example",
    "Scene",
    "box_to_grid",
    "encode_jpeg",
    "format_box",
    "generate_synthetic_dataset",
    "is_complete",
    "iter_examples",
    "iter_texts",
    "load_scenes",
    "make_caption",
    "make_example",
    "make_questions",
    "position_word",
    "referring_expression",
    "render_scene",
    "sample_scene",
]
