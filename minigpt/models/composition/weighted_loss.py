"""The next-token loss with prompt tokens weighted in, and MM-LLaMA's normaliser.

MM-LLaMA's stage 2 (``compute_finetune_loss`` in michaelnny/MM-LLaMA ``mm_llama/run_train.py``) gives
every prompt token (the question, the media marker, earlier turns and their answers) weight 0.05 and
every completion token weight 1, then averages each sample's weighted cross-entropy over the padded
length of the batch, padding included, and averages the samples: the sum over the batch divided by
``B x (L - 1)``, the number of next-token positions of the right-padded ``[B, L]`` batch. Here:

- ``model.prompt_loss_weight`` (``w``, default 0): the weight of a prompt token. A prompt token is a
  text position of the sequence that carries no label (everything but the supervised answers, the
  media slots and padding; with ``supervise: last`` the earlier answers are prompt, as in MM-LLaMA).
  The first position is no target, as a next-token loss has it.
- ``model.loss_normaliser``: ``answer_tokens`` (default) divides by the number of labelled tokens,
  so with ``w = 0`` the loss is the usual mean over answer tokens; ``positions`` divides by
  ``B x (T - 1)``, MM-LLaMA's.

``loss = (sum of answer-token CE + w * sum of prompt-token CE) / normaliser``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from minigpt.common.constants import IGNORE_INDEX

LOSS_NORMALISERS = ("answer_tokens", "positions")


def check_loss_weighting(prompt_loss_weight: Any, loss_normaliser: Any) -> Tuple[float, str]:
    """The two switches, checked: a finite weight >= 0 and a known normaliser."""
    try:
        weight = float(prompt_loss_weight)
    except (TypeError, ValueError):
        weight = float("nan")
    if isinstance(prompt_loss_weight, bool) or not (weight >= 0.0 and weight != float("inf")):
        raise ValueError(f"model.prompt_loss_weight must be a number >= 0 (0: answers only), got {prompt_loss_weight!r}")
    if loss_normaliser not in LOSS_NORMALISERS:
        raise ValueError(
            f"model.loss_normaliser must be one of {', '.join(LOSS_NORMALISERS)}, got {loss_normaliser!r}"
        )
    return weight, loss_normaliser


def prompt_targets(batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """``[B, T-1]``: position ``t`` predicts prompt token ``t + 1`` (text, attended, unlabelled)."""
    text = batch["attention_mask"][:, 1:].bool() & ~batch["media_mask"][:, 1:].bool()
    return text & (batch["labels"][:, 1:] == IGNORE_INDEX)


def weighted_answer_loss(
    llm: Any,
    common: Dict[str, Any],
    batch: Dict[str, torch.Tensor],
    prompt_weight: float,
    normaliser: str,
    on_label_positions: bool,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """``(loss, last hidden states or None, n_correct)`` with prompt tokens weighted ``prompt_weight``.

    ``common`` holds the LLM's inputs (``inputs_embeds``, masks, positions, ``output_hidden_states``).
    With ``on_label_positions`` the LM head runs only where a term of the loss is; otherwise at every
    position. ``n_correct`` counts the answer tokens the argmax predicts, as the plain loss does.
    """
    labels = batch["labels"]
    has_label = labels[:, 1:] != IGNORE_INDEX  # [B, T-1]
    is_prompt = prompt_targets(batch) if prompt_weight > 0 else torch.zeros_like(has_label)
    counted = has_label | is_prompt  # [B, T-1]: the positions with a term in the loss
    # the token each counted position predicts: its label, or for a prompt position the next input id
    targets = torch.where(has_label, labels[:, 1:], batch["input_ids"][:, 1:].to(labels.device))
    if on_label_positions:
        keep = F.pad(counted, (0, 1), value=False)  # [B, T]
        out = llm(use_cache=False, logits_to_keep=keep, **common)
        logits = out.logits  # [n, V] in the order the mask gathers the positions
        if logits.dim() != 2 or logits.shape[0] != int(counted.sum()):
            raise RuntimeError(
                f"{type(llm.model).__name__} returned logits of shape {tuple(logits.shape)} for a boolean "
                f"logits_to_keep selecting {int(counted.sum())} positions; set the model config key "
                "loss_on_label_positions: false to compute logits at every position"
            )
    else:
        out = llm(**common)
        logits = out.logits[:, :-1][counted]  # [n, V]
    tgt, answer = targets[counted], has_label[counted]  # [n]
    weights = torch.where(answer, 1.0, prompt_weight).to(torch.float32)
    total = (F.cross_entropy(logits.float(), tgt, reduction="none") * weights).sum()
    if normaliser == "positions":
        denominator = has_label.numel()  # B x (T - 1): every next-token position, padding included
    else:
        denominator = int(has_label.sum())
    loss = total / max(denominator, 1)
    n_correct = (logits[answer].argmax(-1) == tgt[answer]).sum().detach()
    hidden = out.hidden_states[-1] if common.get("output_hidden_states") else None
    return loss, hidden, n_correct
