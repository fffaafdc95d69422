"""Log-likelihood of given answers: how likely the model finds a continuation of a prompt.

Multiple-choice evaluation by likelihood (lmms-eval's ``loglikelihood`` requests, option ranking)
scores each candidate answer by the summed log-probability of its tokens after the prompt. The
sequence is laid out exactly as a training sample with that answer (the same template, media
slots and tokenisation, :meth:`PromptLayout.build`), so the tokens scored are the tokens the answer
loss is computed on, without the end marker (EOS or the template's ``answer_end``) that follows.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch

from minigpt.common.constants import IGNORE_INDEX


@torch.no_grad()
def continuation_logprobs(
    model: Any,
    images: Optional[torch.Tensor],
    prompts: Sequence[str],
    continuations: Sequence[str],
) -> List[Tuple[float, bool]]:
    """``(sum of log p(token), whether greedy decoding picks every token)`` per (prompt, continuation).

    ``images`` is what ``model.generate`` takes (``[B, 3, H, W]``, rows of text-only prompts ignored,
    or None); ``prompts[i]`` is one instruction (with ``<ImageHere>`` where its image goes).
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts for {len(continuations)} continuations")
    if not prompts:
        return []
    layout = model.layout
    answers = [[c] for c in continuations]
    # the model's own training layout (a subclass may add text, e.g. LaVIN's text-only prefix)
    batch = model.build_inputs([[p] for p in prompts], answers, model.num_image_tokens(), padding_side="right")
    scored = [len(ids) for ids in layout.tokenize([layout.template.answer_prefix + c for c in continuations])]
    device = model.device
    batch = {k: v.to(device) for k, v in batch.items()}
    for adapter in getattr(model, "adapters", {}).values():
        adapter.set_context(has_media=batch["has_media"])
    emb = model.embed(batch, images)
    out = model.llm(
        inputs_embeds=emb, attention_mask=batch["attention_mask"], position_ids=batch["position_ids"], use_cache=False
    )
    logprobs = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)  # [B, T-1, V]: position t predicts t+1
    targets = batch["labels"][:, 1:]  # [B, T-1]
    results = []
    for i, n in enumerate(scored):
        where = (targets[i] != IGNORE_INDEX).nonzero().flatten()[:n]
        if where.numel() < n:
            raise ValueError(f"continuation {i} ({continuations[i]!r}) did not fit: {where.numel()} of {n} tokens laid out")
        tok = targets[i, where]
        lp = logprobs[i, where].gather(-1, tok[:, None]).squeeze(-1)
        greedy = bool((logprobs[i, where].argmax(-1) == tok).all())
        results.append((float(lp.sum()), greedy))
    return results
