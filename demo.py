"""Chat with a model about an image in the browser (gradio), served from an eval config.

    python demo.py --cfg-path eval_configs/quickstart_demo.yaml [--gpu-id 0] [--server-name 127.0.0.1]
                   [--server-port 7860] [--share] [--options key=value ...]

Needs the demo extra: pip install -e ".[demo]". See minigpt/demo/cli.py for every option.
"""

import os
import sys

try:
    import minigpt  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`: the package sits next to this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from minigpt.demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
