"""The lmms-eval adapter: requests shaped as lmms-eval builds them, answered by a tiny model; the entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch
from PIL import Image

lmms_eval = pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance  # noqa: E402

from minigpt.evaluation.lmms_eval_model import MiniGPTLMMS, unit_boxes  # noqa: E402
from minigpt.models.generation.chat import Chat  # noqa: E402
from minigpt.models.generation.conversation import IMAGE_PROMPT  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def adapter():
    torch.manual_seed(0)
    lm = MiniGPTLMMS(pretrained="tinygptv", model_type="tiny", device="cpu", batch_size=2, max_new_tokens=7)
    # what lmms-eval's evaluator sets before sending requests: task -> split -> docs
    lm.task_dict = {
        "fake_vqa": {
            "test": [
                {"image": Image.new("RGB", (40, 30), (200, 30, 30)), "question": "what colour is it?"},
                {"image": Image.new("RGB", (32, 32), (30, 30, 200)), "question": "what shape is it?"},
            ]
        }
    }
    return lm


def _doc_to_visual(doc):
    return [doc["image"]]


def _request(context, gen_kwargs, doc_id, idx):
    # lmms-eval's simple-model generate_until arguments: (context, gen_kwargs, doc_to_visual, doc_id, task, split)
    return Instance(
        request_type="generate_until",
        arguments=(context, dict(gen_kwargs), _doc_to_visual, doc_id, "fake_vqa", "test"),
        idx=idx,
        metadata={"task": "fake_vqa", "doc_id": doc_id, "repeats": 1},
    )


def test_generate_until_answers_like_chat_answer_batch(adapter):
    gen = {"until": ["\n\n"], "max_new_tokens": 4, "temperature": 0}
    requests = [
        _request("<image>\nwhat colour is it?", gen, 0, 0),
        _request("what shape is it?", gen, 1, 1),
    ]
    answers = adapter.generate_until(requests)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    docs = adapter.task_dict["fake_vqa"]["test"]
    expected = Chat(adapter.model).answer_batch(
        [docs[0]["image"], docs[1]["image"]], ["what colour is it?", "what shape is it?"],
        max_new_tokens=4, do_sample=False,
        stop_strings=adapter.model.resolve_stop_strings(None) + ["\n\n"],
    )
    assert answers == [e.split("\n\n")[0].strip() for e in expected]
    for a in answers:
        assert len(adapter.model.tokenizer(a, add_special_tokens=False)["input_ids"]) <= 4 + 1


class _Recorder:
    """Stands in for ``model.generate``: records each call and answers with canned text."""

    def __init__(self, replies):
        self.calls, self.replies = [], list(replies)

    def __call__(self, images, prompts, **kwargs):
        self.calls.append({"images": images, "prompts": list(prompts), **kwargs})
        return [self.replies.pop(0) for _ in prompts]


def test_requests_are_batched_by_settings_cut_at_until_and_returned_in_order(adapter, monkeypatch):
    rec = _Recorder(["red\n\nmore", "blue", "square. STOP here"])  # in call order: requests 0 and 2, then 1
    monkeypatch.setattr(adapter.model, "generate", rec)
    monkeypatch.setattr(adapter, "task_tag", "vqa")
    short = {"until": ["\n\n"], "max_new_tokens": 3}
    other = {"until": "STOP", "max_new_tokens": 9, "temperature": 0.7, "top_p": 0.5}
    requests = [_request("q0 <image>", short, 0, 0), _request("q1", other, 1, 1), _request("q2", short, 1, 2)]
    answers = adapter.generate_until(requests)
    assert answers == ["red", "square.", "blue"]
    assert len(rec.calls) == 2  # requests 0 and 2 share settings and one batch; request 1 runs alone
    first, second = rec.calls
    assert first["prompts"] == [f"{IMAGE_PROMPT} [vqa] q0", f"{IMAGE_PROMPT} [vqa] q2"]
    assert first["images"].shape[0] == 2 and first["max_new_tokens"] == 3 and first["do_sample"] is False
    assert "\n\n" in first["stop_strings"]
    assert second["max_new_tokens"] == 9 and second["do_sample"] is True
    assert second["temperature"] == 0.7 and second["top_p"] == 0.5 and "STOP" in second["stop_strings"]


def test_max_new_tokens_defaults_to_the_model_argument(adapter, monkeypatch):
    rec = _Recorder(["x"])
    monkeypatch.setattr(adapter.model, "generate", rec)
    assert adapter.generate_until([_request("q", {"until": []}, 0, 0)]) == ["x"]
    assert rec.calls[0]["max_new_tokens"] == 7


def _ll_request(context, continuation, doc_id, idx, visual=True):
    # lmms-eval's simple-model loglikelihood arguments: (context, continuation, doc_to_visual, doc_id, task, split)
    return Instance(
        request_type="loglikelihood",
        arguments=(context, continuation, _doc_to_visual if visual else None, doc_id, "fake_vqa", "test"),
        idx=idx,
        metadata={"task": "fake_vqa", "doc_id": doc_id, "repeats": 1},
    )


def test_loglikelihood_is_the_continuations_log_probability_after_the_prompt(adapter):
    model = adapter.model
    question, continuation = "what shape is it?", " a round one"
    # independently: the generation layout of the text-only prompt, then the continuation's tokens
    prompt = model.build_generation_inputs([[question]])
    cont_ids = model.layout.tokenize([model.layout.template.answer_prefix + continuation])[0]
    ids = torch.cat([prompt["input_ids"], torch.tensor([cont_ids])], dim=1)
    with torch.no_grad():
        logits = model.llm.causal_lm(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1)
    n = len(cont_ids)
    expected = logp[-n:].gather(-1, ids[0, -n:, None]).sum().item()
    greedy = bool((logp[-n:].argmax(-1) == ids[0, -n:]).all())

    got = adapter.loglikelihood([_ll_request(question, continuation, 1, 0, visual=False)])
    assert got[0][0] == pytest.approx(expected, abs=1e-4) and got[0][1] == greedy


def test_loglikelihood_in_batches_equals_one_at_a_time(adapter, monkeypatch):
    model = adapter.model
    greedy = Chat(model).answer_batch([None], ["what colour is it?"], max_new_tokens=2, do_sample=False)[0]
    requests = [
        _ll_request("<image>\nwhat colour is it?", " red", 0, 0),
        _ll_request("what colour is it?", greedy, 0, 1, visual=False),
        _ll_request("what shape is it?", " a much longer answer than the others", 1, 2),
    ]
    batched = adapter.loglikelihood(requests)
    monkeypatch.setattr(adapter, "batch_size", 1)
    single = [adapter.loglikelihood([r])[0] for r in requests]
    for (b, bg), (s, sg) in zip(batched, single):
        assert b == pytest.approx(s, abs=1e-4) and bg == sg
    assert all(v < 0 for v, _ in batched)
    assert batched[2][0] < batched[1][0]


def test_rank_and_world_size_come_from_the_launcher(adapter, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    lm = MiniGPTLMMS(pretrained="unused", model=adapter.model)
    assert (lm.rank, lm.world_size) == (1, 2)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2 outside WORLD_SIZE=2"):
        MiniGPTLMMS(pretrained="unused", model=adapter.model)


def test_boxes_are_rewritten_for_tasks_that_parse_unit_xyxy(adapter, monkeypatch):
    assert unit_boxes("the dog {<10><20><30><40>} and <5><0><100><100>") == (
        "the dog [0.10, 0.20, 0.30, 0.40] and [0.05, 0.00, 1.00, 1.00]"
    )
    rec = _Recorder(["<p>dog</p> {<10><20><30><40>}", "plain"])
    monkeypatch.setattr(adapter.model, "generate", rec)
    monkeypatch.setattr(adapter, "box_format", "xyxy_unit")
    gen = {"until": []}
    assert adapter.generate_until([_request("q", gen, 0, 0), _request("r", gen, 1, 1)]) == [
        "<p>dog</p> [0.10, 0.20, 0.30, 0.40]", "plain"]
    with pytest.raises(ValueError, match="box_format"):
        MiniGPTLMMS(pretrained="unused", model=adapter.model, box_format="xywh")


def test_bad_model_arguments_name_themselves():
    with pytest.raises(ValueError, match="batch_size"):
        MiniGPTLMMS(pretrained="unused", model=object(), batch_size="many")


# a fresh interpreter importing lmms-eval's model table: ~15 s
def test_pyproject_entry_point_makes_lmms_eval_find_the_model(tmp_path):
    # install nothing: a bare dist-info carrying this project's entry points is what pip would write
    eps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert "lmms_eval.models" in eps
    dist = tmp_path / "minigpt_entry_points-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: minigpt-entry-points\nVersion: 0.0\n")
    lines = ["[lmms_eval.models]"] + [f"{k} = {v}" for k, v in eps["lmms_eval.models"].items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    code = (
        "from lmms_eval.models import get_model\n"
        "cls = get_model('minigpt')\n"
        "print(cls.__module__ + '.' + cls.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "minigpt.evaluation.lmms_eval_model.MiniGPTLMMS"
