"""Precomputed media features: ``python -m minigpt.features extract`` writes them, datasets read them.

* :mod:`~minigpt.features.embedding` -- one embedding per image or video from a model's vision encoder
  (ImageBind's 2-frame clip protocol);
* :mod:`~minigpt.features.extract` -- the sharded, resumable extraction into safetensors shards;
* :mod:`~minigpt.features.__main__` -- the command line.

The reader is :class:`minigpt.common.feature_store.FeatureStore`; a dataset reads it when its config
sets ``features_dir`` (docs/video.md).
"""
