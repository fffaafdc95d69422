"""Text-only instruction readers: samples with ``"image": None`` and no image placeholder."""

from __future__ import annotations

from functools import partial
from typing import Any, Dict, List, Optional, Sequence

from minigpt.common.io import DatasetError, MissingDataError, path_manager
from minigpt.datasets.datasets.base_dataset import (
    BaseDataset,
    Processor,
    load_json_list,
    parse_json_lines,
    require_keys,
)


def load_json_records(path: str, dataset: str) -> List[Any]:
    """The records of a JSON list file, or of a JSON Lines file (``.jsonl``: one record a line)."""
    if not path.endswith(".jsonl"):
        return load_json_list(path, dataset)
    try:
        with path_manager.open(path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError as exc:
        raise MissingDataError(f"dataset {dataset!r}: annotation file not found: {path}") from exc
    return parse_json_lines(
        lines, lambda n, exc: DatasetError(f"dataset {dataset!r}: line {n} of {path} is not valid JSON: {exc}")
    )


class TextInstructionDataset(BaseDataset):
    """What the text-only instruction readers share: JSON records of one or more files, no image.

    Each subclass parses one record (``_parse(path, index, entry)``); a malformed record is logged,
    counted and left out, and a file of nothing else is an error.
    """

    task = "text_instruction"

    def __init__(
        self,
        name: str,
        ann_paths: Sequence[str],
        text_processor: Optional[Processor] = None,
        task_tag: Optional[str] = None,
    ) -> None:
        super().__init__(name, None, text_processor, None, task_tag=task_tag, read_images=False)
        for path in ann_paths:
            self.add_records(path, load_json_records(path, name), partial(self._parse, path))

    def _parse(self, path: str, i: int, entry: Any) -> Any:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Dict[str, Any]:
        """A text-only sample from a record parsed to ``{key, instruction, answer}``."""
        record = self.records[index]
        instruction, answer = record["instruction"], record["answer"]
        if self.text_processor is not None:
            instruction, answer = self.text_processor(instruction), self.text_processor(answer)
        return {
            "image": None,
            "instruction_input": self.instruction(instruction),
            "answer": answer,
            "sample_id": self.sample_id(record["key"]),
            "task": self.task,
        }


class UnnaturalInstructionDataset(TextInstructionDataset):
    """Unnatural Instructions: ``[{"instances": [{"instruction_with_input", "constraints", "output"}]}]``.

    Reads MiniGPT-v2's ``filtered_unnatural_instruction.json`` (a JSON list) and the original
    release's ``core_data.jsonl`` (the same records, one a line). One sample per instance
    (MiniGPT-v2 reads only the first; records usually hold one): the instruction is
    ``instruction_with_input``, then ``constraints`` when not null, joined by a space; the answer
    is ``output``. Text is kept as written (outputs can be code or lists), so there is no text
    processor by default, and there is never an image: ``"image"`` is ``None`` and the
    instruction has no placeholder. ``sample_id`` is ``"<dataset>:<record>.<instance>"``.
    """


    def _parse(self, path: str, i: int, entry: Any) -> List[Dict[str, Any]]:
        name = self.name
        require_keys(entry, ("instances",), name, path, i)
        instances = entry["instances"]
        if not isinstance(instances, list) or not instances:
            raise DatasetError(
                f"dataset {name!r}: entry {i} of {path}: 'instances' must be a non-empty list, "
                f"got {instances!r:.200}"
            )
        records = []
        for j, instance in enumerate(instances):
            where = f"{i} instance {j}"
            require_keys(instance, ("instruction_with_input", "output"), name, path, where)
            instruction = self._string(instance["instruction_with_input"], name, path, where)
            output = self._string(instance["output"], name, path, where, "output")
            constraints = instance.get("constraints")
            if constraints is not None:
                constraints = self._string(constraints, name, path, where, "constraints")
                instruction = f"{instruction} {constraints}"
            records.append({"key": f"{i}.{j}", "instruction": instruction, "answer": output})
        return records

    @staticmethod
    def _string(value: Any, name: str, path: str, where: str, field: str = "instruction_with_input") -> str:
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(
                f"dataset {name!r}: entry {where} of {path}: {field!r} must be a non-empty string, "
                f"got {value!r:.200}"
            )
        return value.strip()



ALPACA_PROMPT = "Instruction: {instruction}\nResponse:"


def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """LaVIN's Alpaca wording: ``Instruction: <instruction> <input>\\nResponse:``."""
    body = " ".join(p for p in (instruction.strip(), input_text.strip()) if p)
    return ALPACA_PROMPT.format(instruction=body).replace("  ", " ").strip()


class AlpacaDataset(TextInstructionDataset):
    """Stanford Alpaca's ``alpaca_data.json``: ``[{"instruction", "input", "output"}]``, text only.

    The instruction is LaVIN's wording (:func:`alpaca_prompt`: the instruction and, when not empty,
    the input joined by a space, then ``\\nResponse:``); the answer is ``output`` as written. There is
    never an image (``"image": None``, no placeholder). ``sample_id`` is ``"<dataset>:<index>"``. An
    entry without ``instruction`` or ``output`` (or with an empty one) is malformed: logged, counted
    and left out.
    """


    def _parse(self, path: str, i: int, entry: Any) -> Dict[str, Any]:
        require_keys(entry, ("instruction", "output"), self.name, path, i)
        fields = {k: entry.get(k) if entry.get(k) is not None else "" for k in ("instruction", "input", "output")}
        for key, value in fields.items():
            if not isinstance(value, str) or (key != "input" and not value.strip()):
                raise DatasetError(
                    f"dataset {self.name!r}: entry {i} of {path}: {key!r} must be a "
                    f"{'' if key == 'input' else 'non-empty '}string, got {value!r:.200}"
                )
        return {"key": i, "instruction": alpaca_prompt(fields["instruction"], fields["input"]), "answer": fields["output"]}

