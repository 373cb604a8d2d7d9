"""Model parameters that `llama_cpp.Llama()` does not take as arguments, set for one process.

`Llama()` builds its `llama_model_params` with `llama_cpp.llama_model_default_params()` and
offers no way to pass a load-progress callback or to turn llama.cpp's extra buffer types off.
Wrapping that function sets both for every `Llama()` built afterwards in this process. An
instance process hosts one model (DESIGN invariant 4), so a process-wide setting is exact there;
tests and benchmarks that run llama.cpp in-process use the same call, so they load models the
way instances do.

Extra buffer types (`use_extra_bufts`) are where ggml keeps weights repacked for its AMX and
other CPU-specific kernels; `workers.engine_probe` decides whether this host can run them.
"""

from __future__ import annotations

from typing import Callable

_original = None  # llama_model_default_params as llama_cpp defines it, once wrapped
_callback = None  # the ctypes progress callback: llama.cpp keeps a raw pointer to it


def install(*, extra_bufts: bool = True, on_progress: Callable[[float], bool] | None = None) -> None:
    """Make every later `Llama()` in this process load with `use_extra_bufts=extra_bufts` and,
    if given, report load progress through `on_progress(float 0..1)`; it returns False to make
    llama.cpp abandon the load. Calling it again replaces the previous settings."""
    global _original, _callback
    import llama_cpp.llama_cpp as native

    if _original is None:
        _original = native.llama_model_default_params
    original = _original

    callback = None
    if on_progress is not None:
        @native.llama_progress_callback
        def callback(progress, _user_data):
            return bool(on_progress(float(progress)))

    def default_params():
        params = original()
        params.use_extra_bufts = extra_bufts
        if callback is not None:
            params.progress_callback = callback
        return params

    _callback = callback  # referenced for the life of the process, like the models it loads
    native.llama_model_default_params = default_params
