"""Models: resolve a user's model name, place and load it, know its attention layout.

The first layer of the data flow (models → tasks → engine → analysis → controls → report).
:mod:`.loading` is the facade (``resolve_model``, ``load_model``); :mod:`.hub`, :mod:`.cache`
and :mod:`.embedded` find the weights, :mod:`.placement` owns devices and dtypes and
:mod:`.architectures` says where each architecture keeps its keys and values. Nothing here
imports torch at import time.
"""

from pytest_icl.models.loading import ALIASES, DEFAULT_MODEL, LoadedModel, ModelSpec, load_model, resolve_model

__all__ = ["ALIASES", "DEFAULT_MODEL", "LoadedModel", "ModelSpec", "load_model", "resolve_model"]
