"""Train the small byte-level BPE tokenizer shipped in ``minigpt/models/parts/tokenizer``.

The tiny models (and the offline quickstart) need a tokenizer that loads without the network,
knows the multimodal markers as single tokens, and spends few ids on the synthetic shapes' words.
This trains one with the ``tokenizers`` library on:

* the synthetic generator's texts (captions, questions, answers, referring expressions);
* every line of ``minigpt/prompts/*.txt`` present when the script runs;
* the conversation templates' fixed strings;
* a short list of common English words and phrases, so ordinary chat input splits sensibly.

It is byte-level, so any unicode text round-trips. The total vocabulary is ``VOCAB_SIZE`` (1024):
four special tokens, the learned BPE vocabulary, and added tokens that are never split — the image
markers, MiniGPT-v2's task tags and the 101 box-grid tokens ``<0>`` ... ``<100>``.

Deterministic and re-runnable:

    python scripts/train_tokenizer.py [--out minigpt/models/parts/tokenizer]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from minigpt.datasets.synthetic import iter_texts  # noqa: E402

VOCAB_SIZE = 1024
DEFAULT_OUT = REPO_ROOT / "minigpt" / "models" / "parts" / "tokenizer"
PROMPTS_DIR = REPO_ROOT / "minigpt" / "prompts"
MODEL_MAX_LENGTH = 2048

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]
IMAGE_TOKENS = ["<Img>", "</Img>", "<ImageHere>", "<image>"]
TASK_TAGS = ["[caption]", "[vqa]", "[refer]", "[grounding]", "[identify]", "[detection]"]
GRID_TOKENS = [f"<{i}>" for i in range(101)]
# conversation-template markers as single tokens: every training turn carries two of them
TEMPLATE_MARKERS = ["###Human:", "###Assistant:", "[INST]", "[/INST]"]
ADDED_TOKENS = IMAGE_TOKENS + TASK_TAGS + TEMPLATE_MARKERS + GRID_TOKENS

TEMPLATE_STRINGS = ["###Human: ", "###Assistant: ", "[INST] ", " [/INST]", "Human:", "Assistant:"]

SYNTHETIC_SCENES = 4000
SYNTHETIC_SEED = 1234
# Repeats give the short hand-written lists enough weight next to ~40k synthetic strings that
# their frequent words and the templates get merges of their own.
TEMPLATE_REPEATS = 300
PROMPT_REPEATS = 40
ENGLISH_REPEATS = 40

COMMON_ENGLISH = """
the a an and or but not no yes of to in on at by for with from about as into over under
between after before up down out off again then than so very too also only just more most
some any all each every both few many much other such same own this that these those there here
where when what which who whom whose why how is are was were be been being have has had do does
did done can could will would shall should may might must i you he she it we they me him her us
them my your his its our their mine yours one two three four five six seven eight nine ten first
second last next new old good bad great small large big long short high low left right top bottom
front back side middle center centre inside outside near far above below behind
image picture photo photograph scene object objects thing things color colour colors shape shapes
size position location region area box person people man woman child dog cat car tree house
water sky road table hand
see look show tell describe explain answer question ask find give name write read say think know
want need like help please thank thanks sorry hello hi okay sure
time day year way world life work part number word line point place case fact
it is there is there are what is where is how many can you could you would you please describe
tell me about in the image in this image in the picture what do you see this is a the image shows
thank you you are welcome of course i think i don't know let me a little bit
""".split("\n")


def prompt_lines(prompts_dir: Path = PROMPTS_DIR) -> List[str]:
    """Every non-empty line of ``prompts_dir/*.txt``, files in name order; none if the folder is absent."""
    if not prompts_dir.is_dir():
        return []
    lines: List[str] = []
    for path in sorted(prompts_dir.glob("*.txt")):
        with open(path, encoding="utf-8") as f:
            lines.extend(line.rstrip("\n") for line in f if line.strip())
    return lines


def corpus(prompts_dir: Path = PROMPTS_DIR) -> Iterator[str]:
    """The training texts, always in the same order."""
    yield from iter_texts(SYNTHETIC_SCENES, seed=SYNTHETIC_SEED)
    prompts = prompt_lines(prompts_dir)
    for _ in range(PROMPT_REPEATS):
        yield from prompts
    for _ in range(TEMPLATE_REPEATS):
        yield from TEMPLATE_STRINGS
    english = [line.strip() for line in COMMON_ENGLISH if line.strip()]
    for _ in range(ENGLISH_REPEATS):
        yield from english
        # Capitalised and one-word forms too: chat input starts sentences with capitals.
        yield from (line[:1].upper() + line[1:] for line in english)
        for line in english:
            yield from line.split()


def build_tokenizer(prompts_dir: Path = PROMPTS_DIR) -> Tokenizer:
    """Train the BPE model and add the never-split tokens; the total vocabulary is ``VOCAB_SIZE``."""
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(ADDED_TOKENS),
        min_frequency=2,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(prompts_dir), trainer=trainer)
    tok.add_tokens(
        [AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False) for t in ADDED_TOKENS]
    )
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError(
            f"expected {VOCAB_SIZE} tokens, got {tok.get_vocab_size()}; the corpus is too small"
        )
    return tok


def tokenizer_config() -> Dict[str, object]:
    """``tokenizer_config.json``: what transformers needs to load the fast tokenizer as is."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": PAD,
        "padding_side": "right",
        "truncation_side": "right",
        "model_max_length": MODEL_MAX_LENGTH,
        # Byte-level decoding is exact; transformers' space clean-up would break round trips.
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }


def special_tokens_map() -> Dict[str, str]:
    return {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": PAD}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save(tok: Tokenizer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "tokenizer.json", tok.to_str(pretty=True) + "\n")
    _write_atomic(out / "tokenizer_config.json", json.dumps(tokenizer_config(), indent=2) + "\n")
    _write_atomic(out / "special_tokens_map.json", json.dumps(special_tokens_map(), indent=2) + "\n")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--prompts-dir", type=Path, default=PROMPTS_DIR, help="folder of prompt *.txt files")
    args = p.parse_args(argv)
    tok = build_tokenizer(args.prompts_dir)
    save(tok, args.out)
    print(
        f"tokenizer: {tok.get_vocab_size()} tokens ({len(ADDED_TOKENS)} added, "
        f"{len(prompt_lines(args.prompts_dir))} prompt lines) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
