"""ScienceQA in its released layout, as LaVIN trains on it (``QCM -> ALE``).

The release holds ``problems.json`` (``{pid: {question, choices, answer (an index), hint, image,
lecture, solution, subject, grade, ...}}``), ``pid_splits.json`` (``{split: [pid, ...]}``) and the
image of problem ``pid`` at ``images/<split>/<pid>/<image>`` (``image.png``); problems without an
image have ``"image": null``. An optional ``captions.json`` (``{"captions": {pid: text}}``) adds
each image's caption to the context, which LaVIN's published recipe leaves off.

LaVIN's ``QCM`` input is ``Question: ...\\nContext: ...\\nOptions: (A) ... (B) ...\\nResponse:``
(the context is the hint, then the caption when captions are on, or ``N/A``) and its ``ALE`` target
``The answer is X. BECAUSE: <lecture> <solution>``, newlines inside lecture and solution written as
the two characters ``\\n`` (as LaVIN does). A problem with neither lecture nor solution gets
``The answer is X.`` (LaVIN meant to drop the empty ``BECAUSE:``). The ``A`` target is the answer
sentence alone; ``EA`` (another of the formats LaVIN's prompt code offers) is the solution, then the
answer sentence: the model writes out what it sees before it answers. The prompt and grouping helpers here are the ones the ScienceQA benchmark uses too.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from minigpt.common.io import DatasetError, load_json
from minigpt.datasets.datasets.base_dataset import BaseDataset, Processor, make_instruction, require_keys

OPTION_LETTERS = "ABCDE"
SCIENCEQA_PROMPT = "Question: {question}\nContext: {context}\nOptions: {options}\nResponse:"
ANSWER_SENTENCE = "The answer is {letter}."
# LaVIN's recipe trains ALE; A is the answer sentence alone; EA (one of the formats LaVIN's prompt code
# offers) puts the solution first and the answer sentence after it
OUTPUT_FORMATS = ("ALE", "A", "EA")
TASK = "scienceqa"
IMAGE_PATH = "{split}/{pid}/{image}"  # the release's layout under the image root; {image} is the problem's "image"


def scienceqa_context(hint: Optional[str], caption: str = "") -> str:
    """The hint, then the caption (if any), or ``N/A`` when both are empty."""
    context = " ".join([(hint or "").strip(), caption.strip()]).strip()
    return context or "N/A"


def scienceqa_prompt(question: str, context: str, choices: Sequence[str]) -> str:
    """LaVIN's QCM input for one problem: question, context, lettered options, ``Response:``."""
    if not 2 <= len(choices) <= len(OPTION_LETTERS):
        raise ValueError(f"a ScienceQA problem needs 2 to {len(OPTION_LETTERS)} choices, got {len(choices)}")
    options = " ".join(f"({OPTION_LETTERS[i]}) {c}" for i, c in enumerate(choices))
    text = SCIENCEQA_PROMPT.format(question=question, context=context, options=options)
    return text.replace("  ", " ").strip()


def scienceqa_target(answer: int, lecture: str = "", solution: str = "", output_format: str = "ALE") -> str:
    """LaVIN's target: ``The answer is X.``; for ``ALE`` then `` BECAUSE: <lecture> <solution>``; ``EA``: ``<solution> The answer is X.``."""
    sentence = ANSWER_SENTENCE.format(letter=OPTION_LETTERS[answer])
    if output_format == "A":
        return sentence
    if output_format == "EA":
        return f"{solution.replace(chr(10), chr(92) + 'n')} {sentence}".replace("  ", " ").strip()
    because = " ".join(p.replace("\n", "\\n") for p in (lecture, solution) if p).strip()
    text = f"{sentence} BECAUSE: {because}" if because else sentence
    return text.replace("  ", " ").strip()


def grade_band(grade: Any) -> Optional[str]:
    """``grade1``..``grade6`` -> ``G1-6``, ``grade7``..``grade12`` -> ``G7-12``, else None."""
    text = str(grade or "")
    if text.startswith("grade") and text[5:].isdigit():
        return "G1-6" if int(text[5:]) <= 6 else "G7-12"
    return None


def scienceqa_groups(problem: Mapping[str, Any]) -> Dict[str, Any]:
    """The keys the official ScienceQA table groups by (see ``aggregate_scienceqa``).

    ``subject``; ``has_text``: a non-empty hint (the TXT column); ``has_image`` (IMG); ``no_context``:
    neither (NO), as ScienceQA's and LaVIN's scoring define them; ``grade``: ``G1-6`` / ``G7-12``.
    """
    has_text = bool((problem.get("hint") or "").strip())
    has_image = bool(problem.get("image"))
    return {
        "subject": problem.get("subject"),
        "grade": grade_band(problem.get("grade")),
        "has_text": has_text,
        "has_image": has_image,
        "no_context": not has_text and not has_image,
    }


class ScienceQADataset(BaseDataset):
    """The problems of one ``pid_splits.json`` split, each a LaVIN ``QCM -> ALE`` sample.

    A sample is ``{"image": tensor | None, "instruction_input", "answer", "sample_id":
    "<dataset>:<pid>", "task": "scienceqa", "scienceqa": {answer, choices, subject, grade,
    has_text, has_image, no_context}}``; the last is what the ScienceQA scorer reads. An image
    problem's instruction starts with the image placeholder; a text-only one (``"image": null``, or
    any problem when ``read_images`` is off) has ``"image": None`` and none. ``image_only`` keeps
    only the problems with an image. ``image_path`` places a problem's image under the image root
    (default: the release's ``<split>/<pid>/<image>``). A pid the split lists but ``problems.json`` lacks, or a problem
    with a missing field, too few or too many choices or an answer outside them, is malformed:
    logged, counted and left out (training) or an error naming it (evaluation).
    """

    task = TASK

    def __init__(
        self,
        name: str,
        problems_path: str,
        pid_splits_path: str,
        split: str,
        vis_processor: Optional[Processor],
        text_processor: Optional[Processor],
        images_root: Optional[str],
        captions_path: Optional[str] = None,
        output_format: str = "ALE",
        image_only: bool = False,
        image_path: str = IMAGE_PATH,
        task_tag: Optional[str] = None,
        read_images: bool = True,
    ) -> None:
        super().__init__(name, vis_processor, text_processor, images_root, task_tag=task_tag, read_images=read_images)
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"dataset {name!r}: output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
        self.output_format = output_format
        try:
            image_path.format(split="train", pid="1", image="image.png")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"dataset {name!r}: image_path {image_path!r} may only use {{split}}, {{pid}} and {{image}} ({exc!r})"
            ) from None
        self.image_path_template = image_path
        self.problems_path = problems_path
        problems = load_json(problems_path, name)
        if not isinstance(problems, dict):
            raise DatasetError(f"dataset {name!r}: {problems_path} must hold a JSON object {{pid: problem}}")
        splits = load_json(pid_splits_path, name)
        if not isinstance(splits, dict) or split not in splits:
            have = ", ".join(sorted(splits)) if isinstance(splits, dict) else type(splits).__name__
            raise DatasetError(f"dataset {name!r}: {pid_splits_path} has no split {split!r} (it has {have})")
        self.captions = self._captions(captions_path) if captions_path else {}
        self.split_name = split
        self.image_only = image_only
        pids = [str(p) for p in splits[split]]
        self.add_records(pid_splits_path, [(pid, problems.get(pid)) for pid in pids], self._parse)

    def _captions(self, path: str) -> Dict[str, str]:
        data = load_json(path, self.name)
        captions = data.get("captions") if isinstance(data, dict) else None
        if not isinstance(captions, dict):
            raise DatasetError(f"dataset {self.name!r}: {path} must hold {{'captions': {{pid: caption}}}}")
        return {str(k): str(v) for k, v in captions.items()}

    def _parse(self, index: int, item: Any) -> List[Dict[str, Any]]:
        pid, problem = item
        where = f"dataset {self.name!r}: problem {pid!r} ({self.problems_path})"
        if problem is None:
            raise DatasetError(f"{where}: split {self.split_name!r} lists it but problems.json has no such pid")
        require_keys(problem, ("question", "choices", "answer"), self.name, self.problems_path, pid)
        if self.image_only and not problem.get("image"):
            return []
        choices = problem["choices"]
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(OPTION_LETTERS):
            raise DatasetError(f"{where}: 'choices' must be a list of 2 to {len(OPTION_LETTERS)} options, got {choices!r:.200}")
        answer = problem["answer"]
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise DatasetError(f"{where}: 'answer' must index the {len(choices)} choices, got {answer!r}")
        image = problem.get("image")
        if image is not None and not isinstance(image, str):
            raise DatasetError(f"{where}: 'image' must be a file name or null, got {image!r:.100}")
        context = scienceqa_context(problem.get("hint"), self.captions.get(pid, ""))
        return [{
            "key": pid,
            "image": self.image_path_template.format(split=self.split_name, pid=pid, image=image) if image else None,
            "prompt": scienceqa_prompt(str(problem["question"]), context, [str(c) for c in choices]),
            "target": scienceqa_target(answer, str(problem.get("lecture") or ""), str(problem.get("solution") or ""),
                                       self.output_format),
            "truth": {"answer": answer, "choices": [str(c) for c in choices], **scienceqa_groups(problem)},
        }]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        has_image = record["image"] is not None and self.read_images
        prompt = self.text_processor(record["prompt"]) if self.text_processor is not None else record["prompt"]
        return {
            "image": self.load_image(record["image"], sample_id) if has_image else None,
            "instruction_input": self.instruction_for(prompt, has_image),
            "answer": record["target"],
            "sample_id": sample_id,
            "task": self.task,
            "scienceqa": dict(record["truth"]),
        }

    def instruction_for(self, prompt: str, has_image: bool) -> str:
        """The prompt behind the image placeholder (image problems only) and the task tag."""
        return make_instruction(prompt, self.task_tag, has_image)
