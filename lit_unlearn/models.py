"""Loading causal LMs and tokenizers from a local directory or a Hugging Face hub id.

Names with a registered prefix (``builtin:`` for the embedded benchmark's models, see
:mod:`lit_unlearn.zoo`) are resolved to a local directory first.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from lit_unlearn.utils import plain_tensor_defaults

_RESOLVERS: dict[str, Callable[[str], str]] = {}
_CHECKS: dict[str, Callable[[str], object]] = {}
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def register_model_resolver(prefix: str, resolver: Callable[[str], str],
                            check: Callable[[str], object] | None = None) -> None:
    """Make names starting with ``prefix`` resolve through ``resolver(name) -> local dir``
    (which may build the model); ``check(name)`` validates a name without building it."""
    _RESOLVERS[prefix] = resolver
    if check is not None:
        _CHECKS[prefix] = check


def check_model_name(name: str, require_config: bool = True) -> str:
    """Validate a model name as :func:`resolve_model_path` would, without building or
    downloading anything (for constructors: errors early, work later). Returns ``name``."""
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        raise ValueError(f"model must be a local directory or a Hugging Face hub id, got {name!r}")
    name = str(name)
    for prefix in _prefixes():
        if name.startswith(prefix):
            if prefix in _CHECKS:
                _CHECKS[prefix](name)
            return name
    return resolve_model_path(name, require_config)


def resolve_model_path(name: str, require_config: bool = True) -> str:
    """Turn a model name into something ``from_pretrained`` accepts, checking local paths.

    A registered prefix (``builtin:``) is resolved (and built on first use). A name that
    looks like a local path must exist (with a config.json unless ``require_config`` is
    False, as for tokenizer directories). Anything else is passed on as a hub id.
    """
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        raise ValueError(f"model must be a local directory or a Hugging Face hub id, got {name!r}")
    name = str(name)
    for prefix in _prefixes():
        if name.startswith(prefix):
            with plain_tensor_defaults():  # builds run on first use, maybe inside configure_model
                return _RESOLVERS[prefix](name)
    if _looks_local(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"Model path '{name}' does not exist. Point `model` at a directory written by "
                                    "`save_pretrained` (with config.json), or at a hub id such as 'org/name'.")
        if path.is_file() and path.suffix == ".gguf":
            return str(path)
        if not path.is_dir():
            raise NotADirectoryError(f"Model path '{name}' is a file; expected a directory written by "
                                     "`save_pretrained` or a .gguf file.")
        if require_config and not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"Model directory '{name}' has no config.json; expected a directory written by "
                                    "`save_pretrained` (or a LoRA adapter with adapter_config.json).")
        return str(path)
    return name


def _prefixes() -> list[str]:
    """Registered prefixes, longest first (``builtin:smollm2`` before ``builtin:``)."""
    return sorted(_RESOLVERS, key=len, reverse=True)


GGUF_INSTALL = 'pip install "lit-unlearn[gguf]" (from a checkout: pip install -e ".[gguf]")'


def gguf_source(path: str, gguf_file: str | None = None) -> tuple[str, str] | None:
    """``(directory or hub id, file name)`` when ``path`` is a ``.gguf`` file or ``gguf_file`` is
    given; None for an ordinary checkpoint. Checks that the ``gguf`` package is installed."""
    if gguf_file is None and not str(path).endswith(".gguf"):
        return None
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ImportError(f"Loading the GGUF file {gguf_file or path} needs the `gguf` package: "
                          f"{GGUF_INSTALL}") from None
    if gguf_file is not None:
        return str(path), gguf_file
    return str(Path(path).parent), Path(path).name


def _looks_local(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else that is path-shaped is local."""
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return True
    return name.count("/") > 1 or (os.sep != "/" and os.sep in name)


@contextlib.contextmanager
def quiet_transformers():
    """No per-shard progress bars while loading or saving small local models."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _hub_error(name: str, what: str, err: Exception) -> OSError:
    return OSError(
        f"Could not load the {what} '{name}': it is not a local directory and the Hugging Face hub did not "
        f"provide it ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). If this machine is "
        f"offline, download it elsewhere (`hf download {name} --local-dir DIR`), copy DIR here and pass its path.")


def load_tokenizer(name: str, trust_remote_code: bool = False, padding_side: str = "right",
                   gguf_file: str | None = None):
    """A tokenizer with a pad token (the EOS token when the checkpoint has none); from a
    ``.gguf`` file (or ``gguf_file`` in the directory or hub repo ``name``) with its chat template."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name, require_config=False)
    gguf = gguf_source(path, gguf_file)
    try:
        if gguf is not None:
            with quiet_transformers():
                tok = AutoTokenizer.from_pretrained(gguf[0], gguf_file=gguf[1], trust_remote_code=trust_remote_code)
        else:
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as err:
        if Path(path).exists():
            raise
        raise _hub_error(name, "tokenizer", err) from err
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"Tokenizer '{name}' has neither a pad nor an EOS token; set one before training.")
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


QUANTIZATION = ("nf4", "fp4", "int8")
ADAPTER_INFO = "lit_unlearn_adapter.json"  # the quantization a saved adapter was trained on


def quantization_config(kind: str | None, compute_dtype: torch.dtype | None = None):
    """A transformers ``BitsAndBytesConfig`` for ``"nf4"``/``"fp4"`` (4-bit) or ``"int8"``; None for None."""
    if kind is None:
        return None
    if kind not in QUANTIZATION:
        raise ValueError(f"quantization must be one of {QUANTIZATION} or None, got {kind!r}")
    from transformers import BitsAndBytesConfig

    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=kind,
                              bnb_4bit_compute_dtype=compute_dtype or torch.float32, bnb_4bit_use_double_quant=True)


def lora_config(lora: dict):
    """A ``peft.LoraConfig`` from a mapping of its fields; ``alpha`` and ``dropout`` are accepted
    for ``lora_alpha`` and ``lora_dropout``. Defaults: r 8, alpha 2r, dropout 0, all linear layers."""
    try:
        from peft import LoraConfig
    except ImportError:
        raise ImportError("LoRA needs peft: pip install peft") from None
    options = dict(lora)
    for short, full in {"alpha": "lora_alpha", "dropout": "lora_dropout"}.items():
        if short in options:
            options[full] = options.pop(short)
    options.setdefault("r", 8)
    options.setdefault("lora_alpha", 2 * options["r"])
    options.setdefault("lora_dropout", 0.0)
    options.setdefault("target_modules", "all-linear")
    import dataclasses

    known = {f.name for f in dataclasses.fields(LoraConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"lora: unknown field(s) {unknown}; expected peft.LoraConfig fields such as r, alpha, "
                         "target_modules, dropout, bias")
    try:
        return LoraConfig(**options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"lora: {err}") from None


def apply_lora(model, lora: dict):
    """Wrap ``model`` with peft LoRA adapters (see :func:`lora_config`); only the adapters train."""
    from peft import get_peft_model

    config = lora_config(lora)
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise ValueError(f"lora: {err}") from None


def load_causal_lm(
    name: str,
    dtype: str | torch.dtype | None = None,
    gradient_checkpointing: bool = False,
    trust_remote_code: bool = False,
    revision: str | None = None,
    quantization: str | None = None,
    adapter_quantization: bool = True,
    gguf_file: str | None = None,
):
    """Load a causal LM in train mode.

    Args:
        name: local directory, hub id, or registered name (``builtin:small/subject``).
        dtype: weights dtype (``"float32"``, ``"bfloat16"``, ...); None keeps the checkpoint's.
            With quantization it is the compute dtype of the quantized layers.
        gradient_checkpointing: trade compute for activation memory.
        trust_remote_code: run code shipped with the checkpoint (off unless asked).
        quantization: ``"nf4"``, ``"fp4"`` (4-bit) or ``"int8"`` through bitsandbytes; None loads full weights.
        adapter_quantization: for a saved lit-unlearn adapter and ``quantization`` None, load the
            base quantized as the adapter was trained (False: full precision, adapter merged).
        gguf_file: a GGUF file in the directory or hub repo ``name`` (``name`` may also be the
            path of a ``.gguf`` file). Its weights are dequantized into ``dtype`` (default
            float32) and put in a plain model of the same config, which saves as safetensors.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)} or None, got {dtype!r}")
        dtype = DTYPES[dtype]
    kwargs = {"trust_remote_code": trust_remote_code, "revision": revision}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if quantization is not None:
        kwargs["quantization_config"] = quantization_config(quantization, dtype)
        if quantization == "int8":  # bitsandbytes' expected fp16 cast, once per matmul otherwise
            warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
    gguf = gguf_source(path, gguf_file)
    if gguf is not None:
        if quantization is not None:
            raise ValueError(f"quantization={quantization!r} of a GGUF file: convert it first (load it, then "
                             "`save_causal_lm` to a directory) and quantize the saved directory")
        model = _load_gguf(*gguf, dtype or torch.float32, trust_remote_code)
        return _finish_loading(model, gradient_checkpointing)
    adapter = Path(path) / "adapter_config.json"
    if adapter.is_file():  # a LoRA adapter saved by lit-unlearn: load its base, then the adapter
        if quantization is None and adapter_quantization and (Path(path) / ADAPTER_INFO).is_file():
            quantization = json.loads((Path(path) / ADAPTER_INFO).read_text()).get("quantization")
        return _load_adapter(path, adapter, dtype, gradient_checkpointing, trust_remote_code, quantization)
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        if Path(path).exists():
            raise
        raise _hub_error(name, "model", err) from err
    if quantization in ("nf4", "fp4"):
        _keep_4bit_layout(model)
    return _finish_loading(model, gradient_checkpointing)


def _finish_loading(model, gradient_checkpointing: bool):
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x names it so
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model.train()


def _load_gguf(where: str, file: str, dtype: torch.dtype, trust_remote_code: bool):
    """A GGUF checkpoint as a plain model: transformers marks a GGUF-loaded model as quantized
    and refuses to save it, so its weights move into a fresh model built from the same config."""
    from transformers import AutoModelForCausalLM

    try:
        with quiet_transformers():
            loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=file, dtype=dtype,
                                                          trust_remote_code=trust_remote_code)
    except OSError as err:
        if Path(where).exists():
            raise
        raise _hub_error(f"{where}/{file}", "GGUF model", err) from err
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    return model


def _keep_4bit_layout(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel: the repack
    rounds the block scales to bfloat16, so the base model would change after the first
    evaluation (and its cached reference log-probs with it)."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _load_adapter(path, config_file: Path, dtype, gradient_checkpointing, trust_remote_code, quantization):
    """Base model + saved LoRA adapter. On full-precision weights the adapter is merged (a plain
    model, the same function); on a quantized base it stays a frozen adapter."""
    from peft import PeftModel

    base_name = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base_name:
        raise ValueError(f"{config_file}: `base_model_name_or_path` is missing; cannot find the adapter's base model")
    base = load_causal_lm(base_name, dtype=dtype, gradient_checkpointing=gradient_checkpointing,
                          trust_remote_code=trust_remote_code, quantization=quantization)
    with quiet_transformers():
        model = PeftModel.from_pretrained(base, str(path))
    if quantization is None:
        model = model.merge_and_unload().requires_grad_(True)  # a plain model, trainable like any loaded one
    return model.train()


def decoder_layers(model) -> "torch.nn.ModuleList":
    """The list of transformer blocks of a causal LM, found generically.

    The first ``nn.ModuleList`` whose length equals the config's number of layers
    (``model.layers`` in Llama/Qwen/Mistral, ``transformer.h`` in GPT-2, ``gpt_neox.layers``...).
    """
    from torch import nn

    config = getattr(model, "config", None)
    n = None
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        n = n or getattr(config, attr, None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (n is None or len(module) == n):
            return module
    raise ValueError(f"Could not find the decoder layers of {type(model).__name__} (no nn.ModuleList of "
                     f"{n} blocks); pass explicit parameter names instead")


def layer_mlp(layer) -> "torch.nn.Module":
    """The MLP (feed-forward) block of a decoder layer (``mlp``, ``feed_forward`` or ``ffn``)."""
    for attr in ("mlp", "feed_forward", "ffn", "block_sparse_moe"):
        if hasattr(layer, attr):
            return getattr(layer, attr)
    raise ValueError(f"Could not find the MLP of {type(layer).__name__} (no mlp/feed_forward/ffn attribute)")


# Output projections of the MLP in common architectures (Llama/Qwen/Mistral, GPT-2, GPT-NeoX, Phi, T5-style).
DOWN_PROJECTIONS = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2")


def mlp_down_projections(model, layers: Iterable[int] | None = None) -> dict[str, "torch.nn.Module"]:
    """``{module name: module}`` of the MLP output projection of each decoder layer in
    ``layers`` (default all), found by the names in ``DOWN_PROJECTIONS``."""
    blocks = decoder_layers(model)
    names = {id(m): n for n, m in model.named_modules()}
    chosen = {}
    for i in range(len(blocks)) if layers is None else layers:
        for sub, module in layer_mlp(blocks[i]).named_children():
            if sub in DOWN_PROJECTIONS:
                chosen[names[id(module)]] = module
    return chosen


class StopForward(Exception):
    """Raised by a hook to end a forward pass early (activations up to a layer are all that is needed)."""


def hidden_at(model, layer: int, stop: bool = True, call=None, **inputs):
    """Output hidden states ``[B, T, D]`` of decoder layer ``layer`` (0-based), running the model
    no further than that layer when ``stop``. ``call(**inputs)`` replaces ``model(**inputs)``
    (e.g. a ``torch.func.functional_call`` with substituted parameters)."""
    block = decoder_layers(model)[layer]
    captured = {}

    def hook(module, args, output):
        captured["h"] = output[0] if isinstance(output, (tuple, list)) else output
        if stop:
            raise StopForward

    handle = block.register_forward_hook(hook)
    try:
        (call or model)(**inputs)
    except StopForward:
        pass
    finally:
        handle.remove()
    return captured["h"]


def save_causal_lm(model, directory: str | os.PathLike, state_dict: dict | None = None,
                   quantization: str | None = None) -> None:
    """``model.save_pretrained`` (safetensors) into ``directory``; a peft adapter records its base
    model by absolute path and the quantization it was trained on, so :func:`load_causal_lm`
    loads base and adapter as trained. ``state_dict`` replaces the model's (gathered FSDP weights)."""
    directory = Path(directory)
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    with quiet_transformers():
        model.save_pretrained(directory, safe_serialization=True, **extra)
    config_file = directory / "adapter_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        base = config.get("base_model_name_or_path")
        if base and Path(base).is_dir():
            config["base_model_name_or_path"] = str(Path(base).resolve())
            config_file.write_text(json.dumps(config, indent=2))
        (directory / ADAPTER_INFO).write_text(json.dumps({"quantization": quantization}))


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2048, model_max_length: int = 256):
    """A byte-level BPE tokenizer trained on ``texts``, as a HF fast tokenizer with ``<|endoftext|>``
    (BOS and EOS) and ``<|pad|>``: every byte is in its alphabet, so any text encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|pad|>", model_max_length=model_max_length)


def ensure_bpe_tokenizer(path: str | Path, texts: Callable[[], Iterable[str]], vocab_size: int = 2048,
                         model_max_length: int = 256) -> str:
    """``path`` of a :func:`train_bpe_tokenizer` tokenizer trained on ``texts()``, trained and saved
    (atomically, under a file lock) on first use: the embedded benchmarks cache theirs this way."""
    from lit_unlearn.utils import atomic_dir, file_lock

    path = Path(path)
    if not (path / "tokenizer.json").exists():
        with file_lock(str(path) + ".lock"):
            if not (path / "tokenizer.json").exists():
                tok = train_bpe_tokenizer(texts(), vocab_size, model_max_length=model_max_length)
                with atomic_dir(path) as tmp:
                    tok.save_pretrained(tmp)
    return str(path)
