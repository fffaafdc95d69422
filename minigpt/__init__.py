"""minigpt: build, train, evaluate and serve small multimodal LLMs from config.

Importing the package is light: registered names resolve to their modules only when asked for.
"""

from minigpt.common.registry import registry

__version__ = "0.1.0"
__all__ = ["registry", "__version__"]
