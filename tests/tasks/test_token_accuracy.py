"""Teacher-forced token accuracy on the answer tokens (MM-LLaMA's validation metric)."""

from __future__ import annotations

import torch

from minigpt.common.constants import IGNORE_INDEX
from minigpt.models import load_model
from minigpt.tasks.evaluation.token_accuracy import token_accuracy

IMG = "<Img><ImageHere></Img>"


def _samples(k: int):
    g = torch.Generator().manual_seed(0)
    return [
        {"image": torch.randn(3, 64, 64, generator=g), "instruction_input": f"{IMG} colour {i}?", "answer": f"red {i}"}
        for i in range(k)
    ]


def test_counts_match_the_argmax_of_the_full_logits():
    torch.manual_seed(0)
    model = load_model("mm_llama", "tiny", is_eval=True)
    batch = {"image": torch.randn(2, 3, 64, 64), "instruction_input": [f"{IMG} a?", "b?"], "answer": ["yes no", "maybe"]}
    with torch.no_grad():
        fast = model(batch)
        model.loss_on_label_positions = False
        full = model(batch)
        layout = {k: v for k, v in model.build_inputs(batch["instruction_input"], batch["answer"], 1).items()}
        emb = model.embed(layout, batch["image"])
        logits = model.llm(inputs_embeds=emb, attention_mask=layout["attention_mask"], position_ids=layout["position_ids"]).logits
    labels = layout["labels"][:, 1:]
    want = (logits[:, :-1].argmax(-1) == labels)[labels != IGNORE_INDEX].sum()
    assert int(fast["n_correct"]) == int(full["n_correct"]) == int(want)
    assert int(fast["n_tokens"]) == int((labels != IGNORE_INDEX).sum())


def test_token_accuracy_over_a_dataset_is_counts_summed_over_batches():
    torch.manual_seed(0)
    model = load_model("mm_llama", "tiny", is_eval=True)
    data = _samples(5)
    got = token_accuracy(model, data, n=5, batch_size=2)
    correct = tokens = 0
    with torch.no_grad():
        for s in data:  # one sample at a time: the same counts
            out = model({"image": s["image"][None], "instruction_input": [s["instruction_input"]], "answer": [s["answer"]]})
            correct, tokens = correct + int(out["n_correct"]), tokens + int(out["n_tokens"])
    assert got["answer_tokens"] == tokens and got["token_accuracy_skipped"] == 0
    assert abs(got["token_accuracy"] - correct / tokens) < 1e-9
    # training on the answers raises it
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    batch = {"image": torch.stack([s["image"] for s in data]), "instruction_input": [s["instruction_input"] for s in data],
             "answer": [s["answer"] for s in data]}
    for _ in range(60):
        opt.zero_grad()
        model(batch)["loss"].backward()
        opt.step()
    model.eval()
    assert token_accuracy(model, data, n=5, batch_size=2)["token_accuracy"] > got["token_accuracy"]


def test_evaluation_reports_token_accuracy_when_asked(tmp_path):
    from minigpt.common.config import Config
    from minigpt.common.registry import registry
    from minigpt.datasets.synthetic import generate_synthetic_dataset

    generate_synthetic_dataset(tmp_path / "data" / "synthetic", n_train=2, n_test=4, seed=1, progress=False)
    cfg_path = tmp_path / "eval.yaml"
    cfg_path.write_text(
        "model: {arch: mm_llama, model_type: tiny}\n"
        "datasets: {synthetic_vqa: {}}\n"
        "run: {test_splits: [test], eval_token_accuracy: true, max_eval_samples: 3, batch_size_eval: 2,"
        " eval_max_new_tokens: 2, device: cpu}\n"
    )
    cfg = Config(str(cfg_path), [f"run.data_root={tmp_path / 'data'}"])
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    torch.manual_seed(0)
    model = task.build_model(cfg)
    datasets = task.build_datasets(cfg)
    results = task.evaluate(model, datasets, ["test"], cfg.run_cfg, str(tmp_path / "out"), progress=False)
    model.eval()
    want = token_accuracy(model, datasets["synthetic_vqa"]["test"], n=3, batch_size=2)
    assert results["synthetic_vqa/test/token_accuracy"] == want["token_accuracy"]
    assert results["synthetic_vqa/test/answer_tokens"] == want["answer_tokens"] > 0
    off = task.evaluate(model, datasets, ["test"], Config(str(cfg_path), [f"run.data_root={tmp_path / 'data'}",
                        "run.eval_token_accuracy=false"]).run_cfg, str(tmp_path / "out2"), progress=False)
    assert "synthetic_vqa/test/token_accuracy" not in off
