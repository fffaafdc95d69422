"""Readers for image generation: PhotoChat dialogues, MMC4 interleaved documents, (caption, image) pairs.

* :class:`PhotoChatDialogueDataset` turns PhotoChat's photo-sharing dialogues into EasyGen's
  training conversations: the photo turn is written as ``<Img>photo_description</Img>``.
* :class:`MMC4InterleavedDataset` lays an MMC4 document out as one text with each image's slot
  before the sentence it is matched to, and the images in that order.
* :class:`TextToImagePairDataset` reads (caption, image) pairs for creation-only training: the
  caption is the request, the image is the sample's ``target_image``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from minigpt.common.constants import IMAGE_PLACEHOLDER, TARGET_IMAGE_KEY
from minigpt.common.io import DatasetError, path_manager
from minigpt.common.t2i import image_span
from minigpt.datasets.datasets.base_dataset import BaseDataset, load_json_list, pick, require_keys
from minigpt.datasets.datasets.text_datasets import load_json_records


def _expand_dirs(paths: Sequence[str], suffix: str) -> List[str]:
    """Each path, or the ``*suffix`` files of a folder in name order (PhotoChat ships ``train/`` as many files)."""
    out: List[str] = []
    for path in paths:
        if path_manager.isdir(path):
            names = sorted(n for n in path_manager.ls(path) if n.endswith(suffix))
            if not names:
                raise DatasetError(f"annotation folder {path} holds no {suffix} file")
            out.extend(os.path.join(path, n) for n in names)
        else:
            out.append(path)
    return out


class PhotoChatDialogueDataset(BaseDataset):
    """PhotoChat's JSON (``[{"dialogue_id", "photo_url", "photo_description", "dialogue": [{"user_id",
    "message", "share_photo"}]}]``) as text-only multi-turn conversations.

    The user who shares the photo speaks as the assistant. Consecutive turns of one user are joined
    with a space; the photo turn (``share_photo: true``, its message empty) becomes
    ``<Img>photo_description</Img>`` in the sharer's answer, so the model learns to write an image
    as its description. The other user's turns are the instructions; the sharer's turns before the
    other user's first one, and the other user's turns after the sharer's last one, are left out
    (nothing to answer, nothing answered). A dialogue with no photo turn, more than one, or an empty
    description is malformed. Samples carry ``photo_description`` and ``photo_url`` too.
    """

    task = "conversation"
    image_spans_in_answers = True  # the training wrapper's placeholder check lets its <Img>description</Img> pass

    def __init__(self, name: str, ann_paths: Sequence[str], *args: Any, **kwargs: Any) -> None:
        kwargs["read_images"] = False  # the photo is its description here; its pixels are never read
        super().__init__(name, *args, **kwargs)
        for path in _expand_dirs(ann_paths, ".json"):
            self.add_records(path, load_json_list(path, name), lambda i, e, p=path: self._parse(p, i, e))

    def _parse(self, path: str, i: int, entry: Any) -> Dict[str, Any]:
        require_keys(entry, ("dialogue", "photo_description"), self.name, path, i)
        key = entry.get("dialogue_id", i)
        where = f"dataset {self.name!r}: dialogue {key!r} (entry {i}) of {path}"
        turns, description = entry["dialogue"], entry["photo_description"]
        if not isinstance(description, str) or not description.strip():
            raise DatasetError(f"{where}: 'photo_description' must be non-empty text, got {description!r:.100}")
        if "<Img>" in description or "</Img>" in description:
            raise DatasetError(f"{where}: 'photo_description' holds an image tag itself: {description!r:.100}")
        if not isinstance(turns, list) or not turns:
            raise DatasetError(f"{where}: 'dialogue' must be a non-empty list of turns")
        for t, turn in enumerate(turns):
            ok = isinstance(turn, dict) and isinstance(turn.get("share_photo"), bool)
            ok = ok and isinstance(turn.get("message"), str) and turn.get("user_id") in (0, 1, "0", "1")
            if not ok:
                raise DatasetError(
                    f"{where}: turn {t} must be {{'user_id': 0|1, 'message': str, 'share_photo': bool}}, "
                    f"got {turn!r:.200}"
                )
        shares = [t for t, turn in enumerate(turns) if turn["share_photo"]]
        if len(shares) != 1:
            raise DatasetError(f"{where}: needs exactly one turn with share_photo true, has {len(shares)}")
        sharer = str(turns[shares[0]]["user_id"])
        runs: List[List[Any]] = []  # [speaker is sharer, [texts]]
        for turn in turns:
            text = image_span(description) if turn["share_photo"] else " ".join(turn["message"].split())
            mine = str(turn["user_id"]) == sharer
            if not text:
                continue
            if runs and runs[-1][0] == mine:
                runs[-1][1].append(text)
            else:
                runs.append([mine, [text]])
        while runs and runs[0][0]:
            runs.pop(0)
        if runs and not runs[-1][0]:
            runs.pop()
        questions = [" ".join(r[1]) for r in runs[0::2]]
        answers = [" ".join(r[1]) for r in runs[1::2]]
        if not any(image_span(description) in a for a in answers):
            raise DatasetError(f"{where}: the photo is shared before the other user says anything; nothing asks for it")
        return {"key": key, "questions": questions, "answers": answers, "description": description.strip(),
                "photo_url": entry.get("photo_url")}

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        questions = list(record["questions"])
        if self.task_tag:
            questions[0] = f"{self.task_tag} {questions[0]}"
        return {
            "image": None,
            "instruction_input": questions,
            "answer": list(record["answers"]),
            "photo_description": record["description"],
            "photo_url": record["photo_url"],
            "sample_id": self.sample_id(record["key"]),
            "task": self.task,
        }


class MMC4InterleavedDataset(BaseDataset):
    """MMC4 documents (JSON Lines of ``{"text_list", "image_info": [{"image_name", "matched_text_index",
    "matched_sim"}], ...}``) as one interleaved text with its images.

    Each image's slot (``<Img><ImageHere></Img>``) goes right before the sentence it is matched to
    (images matched to one sentence keep their ``image_info`` order); the sample's ``"image"`` is the
    list of those images in text order and its ``"answer"`` the whole text (the loss covers the
    document; the instruction is empty). ``min_similarity`` drops images whose ``matched_sim`` is
    lower; ``max_images`` keeps the first ones (in text order). With ``data_type: text`` the slots are
    left out and only the text is read. ``image_name`` is relative to the image root.
    """

    task = "interleaved"
    slots_in_answers = True  # one placeholder per image, anywhere in the document (the placeholder check's rule)

    def __init__(self, name: str, ann_paths: Sequence[str], *args: Any, min_similarity: Optional[float] = None,
                 max_images: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(name, *args, **kwargs)
        if max_images is not None and int(max_images) < 1:
            raise ValueError(f"datasets.{name}.max_images must be null or >= 1, got {max_images}")
        self.min_similarity = None if min_similarity is None else float(min_similarity)
        self.max_images = None if max_images is None else int(max_images)
        for path in _expand_dirs(ann_paths, ".jsonl"):
            self.add_records(path, load_json_records(path, name), lambda i, e, p=path: self._parse(p, i, e))

    def _parse(self, path: str, i: int, entry: Any) -> Dict[str, Any]:
        require_keys(entry, ("text_list", "image_info"), self.name, path, i)
        where = f"dataset {self.name!r}: document {i} of {path}"
        texts, info = entry["text_list"], entry["image_info"]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise DatasetError(f"{where}: 'text_list' must be a non-empty list of strings")
        if not isinstance(info, list):
            raise DatasetError(f"{where}: 'image_info' must be a list, got {type(info).__name__}")
        placed = []
        for k, img in enumerate(info):
            ok = isinstance(img, dict) and isinstance(img.get("image_name"), str)
            index = img.get("matched_text_index") if isinstance(img, dict) else None
            ok = ok and isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(texts)
            if not ok:
                raise DatasetError(
                    f"{where}: image_info[{k}] needs 'image_name' (text) and 'matched_text_index' "
                    f"(0..{len(texts) - 1}), got {img!r:.200}"
                )
            sim = img.get("matched_sim")
            if self.min_similarity is not None and isinstance(sim, (int, float)) and sim < self.min_similarity:
                continue
            placed.append((index, k, img["image_name"]))
        placed.sort()
        if self.max_images is not None:
            placed = placed[: self.max_images]
        return {"key": entry.get("url", i) if isinstance(entry.get("url"), str) else i,
                "texts": [" ".join(t.split()) for t in texts], "images": [(j, n) for j, _, n in placed]}

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        before: Dict[int, int] = {}
        for j, _ in record["images"]:
            before[j] = before.get(j, 0) + 1
        parts: List[str] = []
        for j, text in enumerate(record["texts"]):
            if self.read_images:
                parts.extend([IMAGE_PLACEHOLDER] * before.get(j, 0))
            if text:
                parts.append(text)
        images = [self.load_image(name, sample_id) for _, name in record["images"]] if self.read_images else []
        return {
            "image": images or None,
            "instruction_input": self.task_tag or "",
            "answer": " ".join(parts),
            "sample_id": sample_id,
            "task": self.task,
        }


class TextToImagePairDataset(BaseDataset):
    """(caption, image) pairs for creation-only training, from LAVIS's caption JSON (``[{"image", "caption"}]``).

    The instruction is a prompt of ``prompt_file`` filled with the caption (the same prompt for the
    same sample), the answer ``answer_template`` filled with it (default ``<Img>{}</Img>``, EasyGen's
    way of writing an image), and the image is read into ``"target_image"`` (what a generation head
    learns to draw); ``"image"`` is None. A caption list gives one pair per caption.
    """

    task = "text_to_image"
    image_spans_in_answers = True  # the default answer is <Img>caption</Img>

    def __init__(self, name: str, ann_paths: Sequence[str], *args: Any, answer_template: str = "<Img>{}</Img>",
                 **kwargs: Any) -> None:
        super().__init__(name, *args, **kwargs)
        if not isinstance(answer_template, str) or answer_template.count("{}") != 1:
            raise ValueError(f"datasets.{name}.answer_template must hold exactly one '{{}}', got {answer_template!r}")
        self.answer_template = answer_template
        for path in ann_paths:
            self.add_records(path, load_json_list(path, name), lambda i, e, p=path: self._parse(p, i, e))

    def _parse(self, path: str, i: int, entry: Any) -> List[Dict[str, Any]]:
        require_keys(entry, ("image", "caption"), self.name, path, i)
        captions = [entry["caption"]] if isinstance(entry["caption"], str) else entry["caption"]
        texts = isinstance(captions, list) and captions and all(isinstance(c, str) and c.strip() for c in captions)
        if not texts or not isinstance(entry["image"], str):
            raise DatasetError(f"dataset {self.name!r}: entry {i} of {path} needs an image path and caption text: "
                               f"{entry!r:.200}")
        image_id = entry.get("image_id", entry["image"])
        n = len(self.records)
        return [{"image": entry["image"], "caption": c, "key": f"{image_id}#{n + k}"} for k, c in enumerate(captions)]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        caption = self.text(record["caption"])
        prompt = pick(self.prompts, sample_id).format(caption) if self.prompts else caption
        return {
            "image": None,
            "instruction_input": f"{self.task_tag} {prompt}" if self.task_tag else prompt,
            "answer": self.answer_template.format(caption),
            TARGET_IMAGE_KEY: self.load_image(record["image"], sample_id),
            "caption": caption,
            "sample_id": sample_id,
            "task": self.task,
        }
