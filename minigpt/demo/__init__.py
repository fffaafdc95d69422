"""The browser demo: chat with a model about an image, with streaming, task shortcuts and boxes.

``python demo.py --cfg-path eval_configs/quickstart_demo.yaml`` serves it (:mod:`minigpt.demo.cli`).
The parts: :mod:`~minigpt.demo.inputs` (what an upload or a message may be), :mod:`~minigpt.demo.session`
(conversations with the model, no UI), :mod:`~minigpt.demo.app` (the gradio page; needs the ``demo``
extra, ``pip install -e ".[demo]"``), :mod:`~minigpt.demo.examples` (example scenes drawn at start-up).
"""
