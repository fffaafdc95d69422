"""Text-to-image: draw captions with a registered t2i generator (or an LLM and EasyGen's caption bridge),
score FID against a precomputed statistics file and CLIP score.

    python eval_scripts/eval_t2i.py --prompts coco/annotations/coco_karpathy_test.json --output-dir out/t2i \
        --t2i diffusers --t2i-option pretrained=/models/sd-2-1-base num_inference_steps=25 \
        --ref-stats stats/coco_test.npz --features torchscript:/models/inception-2015-12-05.pt --clip-model /models/clip-vit-l-14
    torchrun --nproc-per-node 4 eval_scripts/eval_t2i.py ...

Images and predictions are saved as they are made and a rerun continues where an interrupted one
stopped; metrics go to ``<output_dir>/<name>_<split>_metrics.json``. See docs/easygen.md.
"""

from __future__ import annotations

import os
import sys

try:
    import minigpt  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`: the package sits one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minigpt.evaluation.t2i_eval import main

if __name__ == "__main__":
    raise SystemExit(main())
