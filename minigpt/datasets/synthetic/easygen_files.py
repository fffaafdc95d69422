"""Image-generation data, synthetic: drawing dialogues in PhotoChat's JSON and interleaved documents in MMC4's.

Written by :func:`~minigpt.datasets.synthetic.writers.generate_synthetic_dataset` with
``easygen=True`` (``--easygen``), under the synthetic root:

* ``photochat/<split>/dialogues.json``: PhotoChat's released layout (a JSON list of
  ``{"dialogue_id", "photo_id", "photo_url", "photo_description", "dialogue": [{"user_id",
  "message", "share_photo"}]}``), one dialogue per generated image. User 0 asks for a drawing in the
  caption language without its count ("draw a red circle at the top left and ..."), sometimes after a
  greeting; user 1 may answer in words first, then shares the photo (an empty message with
  ``share_photo: true``) and may add a line. ``photo_description`` is the image's caption, so a
  model trained on these answers the request with ``<Img>caption</Img>``; ``photo_url`` names the
  generated image under ``images/`` (``train/000012.jpg``).
* ``mmc4/docs_<split>.jsonl``: MMC4's document layout (one ``{"url", "text_list", "image_info":
  [{"image_name", "raw_url", "matched_text_index", "matched_sim"}], "similarity_matrix"}`` a line),
  one document per two generated images: a title sentence, then per image a lead-in and the
  image's caption, the image matched to its caption. ``image_name`` is relative to ``images/``.

Creation-only pairs need no file of their own: the ``synthetic_t2i_pairs`` builder reads the
generator's COCO-caption JSON as (caption, image) pairs.

Every text is a function of ``(seed, split, index)`` (the ``"text"``-independent ``"easygen"``
stream), so the files do not depend on the workers, and the images are the ones already written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from minigpt.datasets.synthetic.files import atomic_write_bytes, atomic_write_json
from minigpt.datasets.synthetic.scenes import Example, iter_examples
from minigpt.datasets.synthetic.streams import choice, stream_rng

PHOTOCHAT_FILE = "photochat/{split}/dialogues.json"
MMC4_FILE = "mmc4/docs_{split}.jsonl"
IMAGES_PER_DOCUMENT = 2

_GREETINGS = ("hi!", "hello, are you there?", "hey, got a minute?")
_REQUESTS = ("draw {}.", "can you draw {}?", "please draw {}.", "show me {}.")
_BEFORE = ("sure, here it is.", "ok, one moment.", "of course.")
_AFTER = ("do you like it?", "that is what you asked for.", "here you go.")
_LEAD_INS = ("the next picture shows this.", "here is another picture.", "look at this one.")


def drawing_request(caption: str) -> str:
    """The shapes of a caption without its count: "one shape: a red circle at the top." -> "a red circle at the top"."""
    body = caption.split(":", 1)[1] if ":" in caption else caption
    return body.strip().rstrip(".")


def photochat_dialogue(ex: Example, seed: int, dialogue_id: int) -> Dict[str, Any]:
    """One PhotoChat-format dialogue asking for the picture of ``ex`` and sharing it."""
    rng = stream_rng(seed, ex.split, ex.index, "easygen")
    turns: List[Dict[str, Any]] = []
    if rng.random() < 0.5:
        turns.append({"user_id": 0, "message": choice(rng, _GREETINGS), "share_photo": False})
        turns.append({"user_id": 1, "message": "yes, what do you need?", "share_photo": False})
    turns.append({"user_id": 0, "message": choice(rng, _REQUESTS).format(drawing_request(ex.caption)),
                  "share_photo": False})
    if rng.random() < 0.5:
        turns.append({"user_id": 1, "message": choice(rng, _BEFORE), "share_photo": False})
    turns.append({"user_id": 1, "message": "", "share_photo": True})
    if rng.random() < 0.5:
        turns.append({"user_id": 1, "message": choice(rng, _AFTER), "share_photo": False})
    return {
        "dialogue_id": dialogue_id,
        "photo_id": f"{ex.split}/{ex.index:06d}",
        "photo_url": ex.image_name,
        "photo_description": ex.caption,
        "dialogue": turns,
    }


def mmc4_document(examples: List[Example], seed: int) -> Dict[str, Any]:
    """One MMC4-format document over ``examples``' images, each matched to its caption sentence."""
    first = examples[0]
    rng = stream_rng(seed, first.split, first.index, "easygen_doc")
    texts = [f"pictures {first.split} {first.index} of the shapes collection."]
    info = []
    for ex in examples:
        texts.append(choice(rng, _LEAD_INS))
        info.append({
            "image_name": ex.image_name,
            "raw_url": f"https://example.invalid/shapes/{ex.image_name}",
            "matched_text_index": len(texts),
            "matched_sim": 0.3,
        })
        texts.append(ex.caption)
    # image x sentence similarities, 0.3 at the match as in matched_sim
    sims = [[0.3 if k == img["matched_text_index"] else 0.1 for k in range(len(texts))] for img in info]
    return {"url": f"https://example.invalid/docs/{first.split}/{first.index:06d}", "text_list": texts,
            "image_info": info, "similarity_matrix": sims}


def write_easygen_files(root: Path, seed: int, image_size: int, n_images: Dict[str, int]) -> Dict[str, Any]:
    """Write the PhotoChat dialogues and MMC4 documents of every split; returns ``{files, counts}``."""
    files: Dict[str, str] = {}
    counts: Dict[str, int] = {}
    dialogue_id = 0
    for split, n in n_images.items():
        examples = list(iter_examples(n, seed, split, image_size, render=False))
        dialogues = []
        for ex in examples:
            dialogues.append(photochat_dialogue(ex, seed, dialogue_id))
            dialogue_id += 1
        rel = PHOTOCHAT_FILE.format(split=split)
        atomic_write_json(root / rel, dialogues)
        files[f"photochat_{split}"], counts[f"photochat_{split}"] = rel, len(dialogues)
        docs = [
            mmc4_document(examples[i : i + IMAGES_PER_DOCUMENT], seed)
            for i in range(0, n - IMAGES_PER_DOCUMENT + 1, IMAGES_PER_DOCUMENT)
        ]
        rel = MMC4_FILE.format(split=split)
        atomic_write_bytes(root / rel, "".join(json.dumps(d) + "\n" for d in docs).encode("utf-8"))
        files[f"mmc4_{split}"], counts[f"mmc4_{split}"] = rel, len(docs)
    return {"files": files, "counts": counts}
