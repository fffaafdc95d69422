"""Names and values that several layers share, defined once.

Datasets write prompts with these placeholders, the model finds its media slots by them, and the
collate step and the readers agree on the read-report key through this module only.
"""

from __future__ import annotations

# The single token an image slot is written with; the model expands it to the image's embeddings.
IMAGE_TOKEN = "<ImageHere>"
# How a prompt carries an image in the MiniGPT-4 / TinyGPT-V / MiniGPT-v2 formats.
IMAGE_PLACEHOLDER = f"<Img>{IMAGE_TOKEN}</Img>"
# How a prompt carries a video its encoder takes whole, as one media item in an image slot (MM-LLaMA:
# ImageBind's clip views [S, 3, T, H, W] -> one embedding); a template may write the tags its own way
# (``llama2_chat``: ``<<VID>>...<</VID>>``). A video encoded frame by frame uses VIDEO_PLACEHOLDER.
WHOLE_VIDEO_PLACEHOLDER = f"<Vid>{IMAGE_TOKEN}</Vid>"
# The tokens a tokenizer must hold as single special tokens for the image placeholder.
IMAGE_SPECIAL_TOKENS = ("<Img>", "</Img>", IMAGE_TOKEN)
# The single token a video slot is written with; the model expands it to the video's embeddings (its
# frames encoded one by one, then pooled or concatenated as ``model.video_pooling`` says).
VIDEO_TOKEN = "<VideoHere>"
# How a prompt carries a video in the TinyGPT-V / MiniGPT-4 / MiniGPT-v2 formats (the tags are ordinary text).
VIDEO_PLACEHOLDER = f"<Video>{VIDEO_TOKEN}</Video>"
# Every token that marks one media slot, with the kind of media it takes.
MEDIA_SLOT_TOKENS = {IMAGE_TOKEN: "image", VIDEO_TOKEN: "video"}

# DreamLLM's tokens: the model writes DREAM_TOKEN where an image is to be drawn; the layout follows it
# with DREAM_START, one DREAM_QUERY slot per learned dream query (their embeddings are the queries) and
# DREAM_END. Only DREAM_TOKEN is predicted; the rest is laid out by the model.
DREAM_TOKEN = "<dream>"
DREAM_START = "<dream_start>"
DREAM_END = "<dream_end>"
DREAM_QUERY = "<dream_query>"
DREAM_SPECIAL_TOKENS = (DREAM_TOKEN, DREAM_START, DREAM_END, DREAM_QUERY)

# Label value that takes a position out of the loss (PyTorch cross-entropy's default ignore_index).
IGNORE_INDEX = -100

# The key skipping readers attach to each sample with what was read and skipped; collate sums them.
READ_STATS_KEY = "_read_stats"

# The on-disk layout of a run's output directory, shared by the runner that writes it and the
# checkpoint loader that finds a stage's result by the stage's name.
CHECKPOINTS_DIR = "checkpoints"  # <output_dir>/checkpoints/step_<n>/
LATEST_POINTER = "latest"  # <output_dir>/checkpoints/latest: the name of the newest complete step
TRAINED_FILE = "trained.safetensors"  # what was trained, in a step folder
CHECKPOINT_MANIFEST = "manifest.json"  # a step folder: step, each file's size and sha256, written last
PIPELINE_FILE = "pipeline.json"  # a pipeline's output directory: its finished stages in order

# The sample key of an image a model learns to generate (creation pairs); collate stacks it like "image".
TARGET_IMAGE_KEY = "target_image"
