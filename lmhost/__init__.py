"""The ``lmhost`` command (`cli`): ``serve`` and ``demo``, the HTTP client commands (``ls``, ``ps``,
``load``, ``unload``, ``status``) and ``doctor``; and `synthetic`, the tiny GGUF models that
tests, benchmarks and ``lmhost demo`` write. Imports neither Flask nor llama_cpp."""

__version__ = "0.1.0"
