"""The text an HF export carries besides weights: the tokenizer's chat template and the model card.

The chat template renders the conversation the model's ``template:`` lays out in training and
generation (:class:`~minigpt.models.composition.layout.PromptLayout`): BOS when the model adds one,
the template's system text, each user turn wrapped, each earlier answer followed by its end marker,
and the prompt ending where the next answer starts. An image part of a message becomes the image
slot ``<Img><ImageHere></Img>`` followed by a space, as the datasets write it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from torch import nn

from minigpt.models.generation.conversation import IMAGE_PROMPT


def _lit(text: str) -> str:
    """``text`` as a Jinja string literal."""
    return json.dumps(text)


def chat_template(model: nn.Module) -> str:
    """A Jinja chat template giving, for the model's template, the prompt text its layout builds."""
    layout, tpl = model.layout, model.template
    head, _, tail = tpl.user.partition("{}")
    if tpl.history_end is not None:
        end = "{{ " + _lit(tpl.history_end) + " }}"
    elif layout.answer_end == "eos":
        end = "{{ eos_token }}"
    else:
        end = "{{ " + _lit(layout.answer_end) + " }}"
    if layout.bos == "always":
        bos = "{{ bos_token }}" if layout.bos_ids else ""
    elif layout.bos == "first_segment":  # whatever the tokenizer itself puts first (Llama: <s>)
        bos = "{{ " + _lit(layout.tokenizer.decode(layout.tokenize([""], add_special_tokens=True)[0])) + " }}"
    else:
        bos = ""
    return (
        bos
        + "{{ "
        + _lit(tpl.system)
        + " }}"
        + "{%- set ns = namespace(first=true) -%}"
        + "{%- for message in messages -%}"
        + "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
        + "{%- else -%}{%- set text = namespace(v='') -%}"
        + "{%- for part in message['content'] -%}"
        + "{%- if part['type'] == 'image' -%}{%- set text.v = text.v + "
        + _lit(IMAGE_PROMPT + " ")
        + " -%}"
        + "{%- elif part['type'] == 'text' -%}{%- set text.v = text.v + part['text'] -%}{%- endif -%}"
        + "{%- endfor -%}{%- set text = text.v -%}{%- endif -%}"
        + "{%- if message['role'] == 'user' -%}"
        + "{{ ("
        + _lit(tpl.sep)
        + " if not ns.first else '') + "
        + _lit(head)
        + " + text + "
        + _lit(tail)
        + " }}"
        + "{%- set ns.first = false -%}"
        + "{%- elif message['role'] == 'assistant' -%}"
        + "{{ "
        + _lit(tpl.answer_prefix)
        + " + text }}"
        + end
        + "{%- endif -%}"
        + "{%- endfor -%}"
    )


_USAGE = {
    "blip2": """```python
from transformers import AutoTokenizer, Blip2ForConditionalGeneration

model = Blip2ForConditionalGeneration.from_pretrained("{repo}")
tok = AutoTokenizer.from_pretrained("{repo}")
prompt = tok.apply_chat_template([{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "What is in the picture?"}}]}}], tokenize=False)
prompt = prompt.replace("<ImageHere>", "<ImageHere>" * {n_image})  # one slot per query token
inputs = tok(prompt, return_tensors="pt", add_special_tokens=False)
out = model.generate(**inputs, pixel_values=pixel_values, max_new_tokens=30)  # pixel_values: [1, 3, {size}, {size}]
```
(`Blip2Processor` puts the query tokens in front of the text, BLIP-2's way; the model was trained
with them inside `<Img>...</Img>`, which the lines above reproduce.)""",
    "llava": """```python
from transformers import pipeline

pipe = pipeline("image-text-to-text", model="{repo}")
messages = [{{"role": "user", "content": [{{"type": "image", "url": "picture.png"}}, {{"type": "text", "text": "What is in the picture?"}}]}}]
print(pipe(text=messages, max_new_tokens=30))
```
`AutoProcessor` expands `<ImageHere>` to {n_image} image slots and prepares the image.""",
    "remote_code": """```python
from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{repo}", trust_remote_code=True)
tok = AutoTokenizer.from_pretrained("{repo}", trust_remote_code=True)
pixel_values = AutoImageProcessor.from_pretrained("{repo}", trust_remote_code=True)(image, return_tensors="pt")["pixel_values"]
prompt = tok.apply_chat_template([{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "What is in the picture?"}}]}}], tokenize=False)
prompt = prompt.replace("<ImageHere>", "<ImageHere>" * {n_image})  # one slot per image embedding
inputs = tok(prompt, return_tensors="pt", add_special_tokens=False)
out = model.generate(**inputs, pixel_values=pixel_values, max_new_tokens=30)
```
The modeling code (`modeling_minigpt.py`) is in this folder; it needs torch and transformers only.""",
}


def model_card(model: nn.Module, layout: str, info: Dict[str, Any], repo: Optional[str] = None) -> str:
    """README.md of an export: front matter for the Hub, what the model is, how to load it."""
    cfg = model.cfg or {}
    arch, mtype = cfg.get("arch", "minigpt"), cfg.get("model_type", "")
    classes = {
        "blip2": "Blip2ForConditionalGeneration",
        "llava": "LlavaForConditionalGeneration",
        "remote_code": "MiniGPTForConditionalGeneration (remote code)",
    }
    size = int(getattr(model.vision_encoder, "image_size", 0) or 0)
    fmt = dict(repo=repo or "<this folder>", n_image=model.num_image_tokens(), size=size)
    lora = info.get("adapter")
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        f"tags: [minigpt, {arch}, multimodal]",
        "---",
        f"# {arch} ({mtype})",
        "",
        f"A {arch} model exported by minigpt as `{classes[layout]}`: vision encoder "
        f"`{cfg.get('vision_encoder', {}).get('name')}`, projector `{cfg.get('projector', {}).get('name')}`, "
        f"LLM `{type(model.llm.causal_lm).__name__}`. Weights in `{info['dtype']}`.",
        "",
        f"* image: {size} x {size} px, {model.num_image_tokens()} embeddings per image "
        f"(token `<ImageHere>`, id {info['image_token_id']})",
        f"* prompt template `{model.template.name}` (the tokenizer's chat template renders it)",
        f"* LoRA: {'a peft adapter in `' + lora + '/` (load it with `PeftModel.from_pretrained`)' if lora else info['lora']}",
        "",
        "## Use",
        "",
        _USAGE[layout].format(**fmt),
        "",
    ]
    if lora:
        lines += [
            "```python",
            "from peft import PeftModel",
            "",
            f'model = PeftModel.from_pretrained(model, "{repo or "<this folder>"}", subfolder="{lora}")',
            "```",
            "",
        ]
    return "\n".join(lines)
