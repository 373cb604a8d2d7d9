"""The model catalog: what is on disk in the models dir, as seed 004 describes it.

Layout (LM Studio's): ``<models_dir>/<publisher>/<folder>/<file>.gguf``. A folder is one model;
several quantizations in it are its variants (``key@q4_k_m``); split files
(``name-00001-of-00003.gguf``) are one file set; ``mmproj*.gguf`` is a vision projector that
gives the model ``capabilities.vision``. A folder with ``config.json`` and ``*.safetensors``
and no GGUF is an MLX model: listed, not loadable.

Listing is cheap when warm: each file's facts are cached by (path, size, mtime_ns), in memory and
in ``<state_dir>/catalog-cache.json`` (so a restarted worker is warm too), and a warm listing
only stats files. Nothing bad on disk fails a listing: an unparseable file, an unreadable
folder, a symlink leading out of the models dir or a name that is not UTF-8 is left out and
logged once (per process and file version).

Thread safety: `Catalog.list_models` holds one lock for a whole scan, so concurrent requests in
a gthread worker never parse a file twice; the result is an immutable snapshot.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from workers import model_facts
from workers.errors import ModelNotFound
from workers.gguf_header import GgufError, read_header
from workers.model_facts import FileFacts

log = logging.getLogger(__name__)

CACHE_FILE = "catalog-cache.json"
CACHE_VERSION = 3  # bump when FileFacts changes (3: tensor sizes; incomplete files refused)

_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class Variant:
    name: str                  # "q8_0", or the file stem when the quantization is unknown
    files: tuple[Path, ...]    # one path, or every part of a split set in order
    size_bytes: int
    facts: FileFacts           # facts of the first file; n_params summed over all parts


@dataclass(frozen=True)
class Model:
    type: str                  # "llm" | "embedding"
    publisher: str
    key: str
    display_name: str
    architecture: str | None
    format: str                # "gguf" | "mlx"
    folder: Path
    variants: tuple[Variant, ...]
    selected: Variant          # the default variant, see `default_variant`
    vision: bool = False
    description: str | None = None
    mlx: dict = field(default_factory=dict)  # MLX models: fields read from config.json

    @property
    def quantization(self) -> tuple[str, int] | None:
        return self.selected.facts.quantization

    @property
    def size_bytes(self) -> int:
        return self.selected.size_bytes

    @property
    def params_string(self) -> str | None:
        facts = self.selected.facts
        return facts.size_label or model_facts.params_string(facts.n_params)

    @property
    def max_context_length(self) -> int | None:
        return self.selected.facts.context_length

    @property
    def trained_for_tool_use(self) -> bool:
        return self.selected.facts.tool_use


@dataclass(frozen=True)
class FileStat:
    path: Path
    size: int
    mtime_ns: int


def default_variant(variants: list[Variant]) -> Variant:
    """The variant a plain key picks: the most bits per weight (best quality), then the larger
    file, then the name — deterministic whatever order the directory lists them in."""
    def rank(v: Variant):
        bits = v.facts.quantization[1] if v.facts.quantization else 0
        return (bits, v.size_bytes, v.name)
    return max(variants, key=rank)


def model_key(folder_name: str) -> str:
    """API.md: the folder name lower-cased, a trailing ``-gguf`` removed."""
    key = folder_name.lower()
    return key[:-5] if key.endswith("-gguf") else key


def group_gguf_files(names: list[str]) -> tuple[list[list[str]], bool, list[str]]:
    """Split a folder's ``.gguf`` file names into file sets (a single file or the ordered parts
    of a split), whether a vision projector is present, and names to reject (with incomplete
    split sets)."""
    sets: list[list[str]] = []
    splits: dict[tuple[str, int], dict[int, str]] = {}
    vision = False
    rejected: list[str] = []
    for name in sorted(names):
        if name.lower().startswith("mmproj"):
            vision = True
            continue
        match = _SPLIT.match(name)
        if match:
            group = splits.setdefault((match["stem"], int(match["count"])), {})
            group[int(match["no"])] = name
        else:
            sets.append([name])
    for (_, count), parts in sorted(splits.items()):
        if count >= 1 and sorted(parts) == list(range(1, count + 1)):
            sets.append([parts[i] for i in range(1, count + 1)])
        else:
            rejected.extend(parts.values())
    return sets, vision, rejected


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # os.scandir gives undecodable bytes as lone surrogates
        return False


class Catalog:
    """Scans the models dir and answers listings and model references.

    `read_header` is a seam for tests (count parses, inject failures).
    """

    def __init__(self, models_dir: str | os.PathLike, state_dir: str | os.PathLike | None = None,
                 read_header: Callable = read_header):
        self.models_dir = Path(models_dir)
        self._cache_path = Path(state_dir) / CACHE_FILE if state_dir else None
        self._read_header = read_header
        self._lock = threading.Lock()
        # path -> (size, mtime_ns, FileFacts | MLX facts dict | error str); guarded by _lock
        self._facts: dict[str, tuple[int, int, object]] = {}
        self._logged: set[tuple] = set()
        self._cache_loaded = False
        # folder path -> ((publisher, file signature), Model | None); guarded by _lock
        self._folders: dict[str, tuple[tuple, Model | None]] = {}
        self._snapshot: tuple[list, list[Model]] = ([], [])
        self._unreadable = False  # set by _file_facts while a folder is built
        self.parsed_files = 0  # files whose header was read; tests assert a warm listing adds none

    # -- public ------------------------------------------------------------------------------

    def list_models(self) -> list[Model]:
        with self._lock:
            self._load_disk_cache()
            parsed_before = self.parsed_files
            models = self._scan()
            if self.parsed_files != parsed_before:
                self._save_disk_cache()
        return models

    def resolve(self, reference: str, models: list[Model] | None = None) -> tuple[Model, Variant]:
        """The model and variant a reference names: ``key``, ``publisher/key``, either with
        ``@variant``. Case-insensitive; a trailing ``-gguf`` is ignored like in keys. Only
        names from the catalog are matched: a reference never becomes a path."""
        if models is None:
            models = self.list_models()
        ref, _, variant_name = reference.strip().partition("@")
        ref = model_key(ref)
        for model in models:
            if ref in (model.key, f"{model.publisher.lower()}/{model.key}"):
                if not variant_name:
                    return model, model.selected
                for variant in model.variants:
                    if variant.name == variant_name.lower():
                        return model, variant
                names = ", ".join(v.name for v in model.variants)
                raise ModelNotFound(f"model {model.key!r} has no variant {variant_name!r} "
                                    f"(it has: {names})", param="model")
        raise ModelNotFound(f"no model {reference!r} in the models dir", param="model")

    # -- scanning ----------------------------------------------------------------------------

    def _log_once(self, what: tuple, message: str, *args) -> None:
        if what not in self._logged:
            self._logged.add(what)
            log.warning(message, *args)

    def _entries(self, folder: str, root: str) -> list[os.DirEntry]:
        """The usable entries of a folder, unordered: UTF-8 names, no symlink leading out of
        root."""
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            self._log_once(("unreadable", folder), "models dir: skipping unreadable %s: %s",
                           folder, exc.strerror or exc)
            return []
        usable = []
        for entry in entries:
            if not _utf8(entry.name):
                self._log_once(("name", os.fsencode(entry.path)),
                               "models dir: skipping %r: name is not UTF-8", os.fsencode(entry.path))
                continue
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if os.path.commonpath([target, root]) != root:
                    self._log_once(("symlink", entry.path), "models dir: not following %s: "
                                   "it links outside the models dir", entry.path)
                    continue
            usable.append(entry)
        return usable

    def _scan(self) -> list[Model]:
        root = os.path.realpath(self.models_dir)
        if not os.path.isdir(root):
            self._log_once(("missing", root), "models dir %s does not exist", root)
            return []
        models: list[Model] = []
        seen: set[str] = set()
        for publisher in self._entries(root, root):
            if not _is_dir(publisher):
                continue
            for folder in self._entries(publisher.path, root):
                if not _is_dir(folder):
                    continue
                seen.add(folder.path)
                model = self._scan_folder(publisher.name, folder.path, root)
                if model is not None:
                    models.append(model)
        for gone in self._folders.keys() - seen:
            del self._folders[gone]
        previous_inputs, previous = self._snapshot
        if len(models) == len(previous_inputs) and all(
                a is b for a, b in zip(models, previous_inputs)):
            return previous  # nothing changed: the same immutable list as last time
        listing = _assign_unique_keys(models, self._log_once)
        self._snapshot = (models, listing)
        return listing

    def _scan_folder(self, publisher: str, folder: str, root: str) -> Model | None:
        """The folder's model, rebuilt only when its files' names, sizes or mtimes changed."""
        files = []
        for entry in self._entries(folder, root):
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except OSError as exc:
                self._log_once(("stat", entry.path), "models dir: skipping %s: %s", entry.path, exc)
                continue
            files.append((entry.name, st.st_size, st.st_mtime_ns))
        files.sort()
        signature = (publisher, tuple(files))
        cached = self._folders.get(folder)
        if cached is not None and cached[0] == signature:
            return cached[1]
        self._unreadable = False
        model = self._build_model(publisher, Path(folder), files)
        if not self._unreadable:  # permissions can change without touching size or mtime
            self._folders[folder] = (signature, model)
        return model

    def _build_model(self, publisher: str, folder: Path, files) -> Model | None:
        gguf: dict[str, FileStat] = {}
        other: dict[str, FileStat] = {}
        for name, size, mtime_ns in files:
            stat = FileStat(folder / name, size, mtime_ns)
            (gguf if name.lower().endswith(".gguf") else other)[name] = stat
        if gguf:
            return self._gguf_model(publisher, folder, gguf)
        if "config.json" in other and any(n.endswith(".safetensors") for n in other):
            return self._mlx_model(publisher, folder, other)
        self._log_once(("empty", str(folder)), "models dir: %s holds no model file", folder)
        return None

    def _file_facts(self, stat: FileStat) -> FileFacts | None:
        """Facts of one file, from the cache when its size and mtime are unchanged."""
        cached = self._facts.get(str(stat.path))
        if cached is None or cached[:2] != (stat.size, stat.mtime_ns):
            try:
                self.parsed_files += 1
                entry = model_facts.facts_from_header(self._read_header(stat.path))
            except GgufError as exc:
                entry = f"not a usable GGUF file: {exc}"
            except OSError as exc:
                # Not cached: permissions can be fixed without touching size or mtime.
                self._log_once(("unreadable", str(stat.path)), "models dir: skipping "
                               "unreadable %s: %s", stat.path, exc.strerror or exc)
                self._unreadable = True
                return None
            cached = (stat.size, stat.mtime_ns, entry)
            self._facts[str(stat.path)] = cached
        if isinstance(cached[2], str):
            self._log_once(("bad", str(stat.path), stat.size, stat.mtime_ns),
                           "models dir: leaving out %s: %s", stat.path, cached[2])
            return None
        return cached[2]

    def _gguf_model(self, publisher: str, folder: Path, files: dict[str, FileStat]) -> Model | None:
        file_sets, vision, rejected = group_gguf_files(list(files))
        for name in rejected:
            self._log_once(("split", str(files[name].path)),
                           "models dir: leaving out %s: its split set is incomplete", files[name].path)
        variants = []
        for names in file_sets:
            stats = [files[n] for n in names]
            facts = [self._file_facts(s) for s in stats]
            if any(f is None for f in facts):
                continue
            head = facts[0]
            if len(facts) > 1:  # tensors are spread over the parts; metadata is in the first
                head = head.with_parts(facts)
            quant = head.quantization[0].lower() if head.quantization else None
            stem = names[0][:-5].lower()
            variants.append(Variant(quant or stem, tuple(s.path for s in stats),
                                    sum(s.size for s in stats), head))
        if not variants:
            return None
        variants = _unique_variant_names(variants, files)
        selected = default_variant(variants)
        facts = selected.facts
        return Model(
            type="embedding" if facts.is_embedding else "llm",
            publisher=publisher,
            key=model_key(folder.name),
            display_name=facts.name or model_facts.readable_name(folder.name),
            architecture=facts.architecture,
            format="gguf",
            folder=folder,
            variants=tuple(variants),
            selected=selected,
            vision=vision,
            description=facts.description,
        )

    def _mlx_model(self, publisher: str, folder: Path, files: dict[str, FileStat]) -> Model | None:
        config_stat = files["config.json"]
        cached = self._facts.get(str(config_stat.path))
        if cached is None or cached[:2] != (config_stat.size, config_stat.mtime_ns):
            self.parsed_files += 1
            try:
                config = json.loads(config_stat.path.read_bytes()[:1 << 20])
                if not isinstance(config, dict):
                    raise ValueError("config.json is not an object")
                entry = _mlx_facts(config)
            except (OSError, ValueError) as exc:
                entry = f"{type(exc).__name__}: {exc}"
            cached = (config_stat.size, config_stat.mtime_ns, entry)
            self._facts[str(config_stat.path)] = cached
        if isinstance(cached[2], str):
            self._log_once(("bad", str(config_stat.path), config_stat.size, config_stat.mtime_ns),
                           "models dir: leaving out MLX model %s: %s", folder, cached[2])
            return None
        mlx = cached[2]
        weights = sorted(s.path for n, s in files.items() if n.endswith(".safetensors"))
        facts = FileFacts(
            architecture=mlx["architecture"], name=None, description=None, size_label=None,
            quantization=tuple(mlx["quantization"]) if mlx["quantization"] else None,
            context_length=mlx["context_length"], is_embedding=mlx["is_embedding"],
            tool_use=False, n_params=0, expert_count=None, expert_used_count=None, block_count=None,
            embedding_length=None, head_count=None, head_count_kv=None)
        variant = Variant("mlx", tuple(weights),
                          sum(s.size for n, s in files.items() if n.endswith(".safetensors")), facts)
        return Model(
            type="embedding" if facts.is_embedding else "llm",
            publisher=publisher, key=model_key(folder.name),
            display_name=model_facts.readable_name(folder.name),
            architecture=facts.architecture, format="mlx", folder=folder,
            variants=(variant,), selected=variant, vision=mlx["vision"], mlx=mlx)

    # -- on-disk cache -------------------------------------------------------------------------

    def _load_disk_cache(self) -> None:
        if self._cache_loaded or self._cache_path is None:
            return
        self._cache_loaded = True
        try:
            data = json.loads(self._cache_path.read_text())
            if data.get("version") == CACHE_VERSION:
                for path, (size, mtime_ns, kind, value) in data["files"].items():
                    if kind == "gguf":
                        value = FileFacts.from_json(value)
                    self._facts[path] = (size, mtime_ns, value)
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            pass  # a missing or damaged cache only costs a cold listing

    def _save_disk_cache(self) -> None:
        if self._cache_path is None:
            return
        # Written whole to a temporary file, then renamed: readers see the old or the new cache.
        # Concurrent writers (several HTTP workers) each write a full, valid cache; last wins.
        tmp = self._cache_path.with_name(f"{CACHE_FILE}.{os.getpid()}.{threading.get_ident()}")
        try:
            files = {path: (size, mtime_ns, *_cache_record(value))
                     for path, (size, mtime_ns, value) in self._facts.items()}
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "files": files}))
            os.replace(tmp, self._cache_path)
        except OSError as exc:
            self._log_once(("cache", str(self._cache_path)), "catalog cache not written: %s", exc)
            tmp.unlink(missing_ok=True)


def _cache_record(value) -> tuple[str, object]:
    if isinstance(value, FileFacts):
        return "gguf", value.to_json()
    return ("error" if isinstance(value, str) else "mlx"), value


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _mlx_facts(config: dict) -> dict:
    quant = config.get("quantization") or config.get("quantization_config") or {}
    bits = quant.get("bits") if isinstance(quant, dict) else None
    arch = config.get("model_type") if isinstance(config.get("model_type"), str) else None
    ctx = config.get("max_position_embeddings")
    return {
        "architecture": arch,
        "quantization": [f"{bits}bit", bits] if isinstance(bits, int) else None,
        "context_length": ctx if isinstance(ctx, int) else None,
        "is_embedding": arch in model_facts.ENCODER_ARCHITECTURES,
        "vision": "vision_config" in config,
    }


def _unique_variant_names(variants: list[Variant], files: dict[str, FileStat]) -> list[Variant]:
    """Two file sets with the same quantization in one folder are told apart by file stem."""
    counts: dict[str, int] = {}
    for v in variants:
        counts[v.name] = counts.get(v.name, 0) + 1
    return [v if counts[v.name] == 1 else
            Variant(v.files[0].name[:-5].lower(), v.files, v.size_bytes, v.facts)
            for v in variants]


def _assign_unique_keys(models: list[Model], log_once) -> list[Model]:
    """Keys are unique (seed 004). Folders of several publishers that map to one key are all
    keyed ``publisher/key``; two folders of one publisher that still collide keep the first
    in name order, and the other is left out and logged."""
    by_key: dict[str, list[Model]] = {}
    for model in sorted(models, key=lambda m: str(m.folder)):
        by_key.setdefault(model.key, []).append(model)
    result: dict[str, Model] = {}
    for key, group in by_key.items():
        for model in group:
            unique = key if len(group) == 1 else f"{model.publisher.lower()}/{key}"
            if unique in result:
                log_once(("key", str(model.folder)), "models dir: leaving out %s: key %r is "
                         "taken by %s", model.folder, unique, result[unique].folder)
                continue
            result[unique] = model if unique == key else replace(model, key=unique)
    return sorted(result.values(), key=lambda m: m.key)
