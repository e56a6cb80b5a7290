"""``ModelSource``: where a method's model comes from and how it is loaded (dtype, quantization, LoRA).

Constructing one only checks its arguments; the model (and a built-in model's build) is
loaded by :meth:`ModelSource.load`, which ``UnlearningModule.configure_model`` calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_unlearn.models import (
    DTYPES,
    QUANTIZATION,
    apply_lora,
    check_model_name,
    load_causal_lm,
    load_tokenizer,
    lora_config,
    resolve_model_path,
)

# Weights dtype for a Trainer precision when `dtype` is not given; others (32-true, *-mixed) -> float32.
PRECISION_DTYPES = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64}


class ModelSource:
    """The model options of a method, checked at construction, applied at load time.

    Args:
        owner: the method's name, for error messages.
        model: a model name (local directory, hub id, ``builtin:...``) or an ``nn.Module``.
        tokenizer: tokenizer name or path; default the model's.
        dtype, quantization, lora, gradient_checkpointing, trust_remote_code: see
            :class:`~lit_unlearn.methods.UnlearningModule`.
        supports_lora: False for methods that edit full-precision base weights.
        gguf_file: a GGUF file inside the directory or hub repo ``model``.
    """

    def __init__(self, owner: str, model: str | nn.Module, tokenizer: str | None = None, dtype: str | None = None,
                 quantization: str | None = None, lora: dict[str, Any] | None = None,
                 gradient_checkpointing: bool = False, trust_remote_code: bool = False,
                 supports_lora: bool = True, gguf_file: str | None = None) -> None:
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"{owner}: `dtype` must be one of {sorted(DTYPES)} or null, got {dtype!r}")
        if quantization is not None and quantization not in QUANTIZATION:
            raise ValueError(f"{owner}: `quantization` must be one of {list(QUANTIZATION)} or null, "
                             f"got {quantization!r}")
        if lora is not None and not isinstance(lora, dict):
            raise ValueError(f"{owner}: `lora` must be a mapping of peft LoraConfig fields (r, alpha, target_modules, "
                             f"...), got {lora!r}")
        if lora is not None:
            lora_config(lora)  # unknown fields fail here, before any work
        if quantization and isinstance(model, nn.Module):
            raise ValueError(f"{owner}: `quantization` needs `model` as a name or path (it is applied while loading); "
                             "quantize the module yourself or pass its directory")
        if (quantization or lora is not None) and not supports_lora:
            raise ValueError(f"{owner} does not support `quantization`/`lora` (it edits full-precision base weights)")
        if quantization and lora is None:
            raise ValueError(f"{owner}: `quantization`={quantization!r} needs `lora` (quantized weights cannot be "
                             "trained directly), e.g. lora: {r: 16}")
        if gguf_file is not None and (isinstance(model, nn.Module) or not str(gguf_file).endswith(".gguf")):
            raise ValueError(f"{owner}: `gguf_file` must name a .gguf file inside the directory or hub repo "
                             f"`model`, got {gguf_file!r}")
        self.gguf_file = gguf_file
        self.owner = owner
        self.module = model if isinstance(model, nn.Module) else None
        self.name = None if self.module is not None else check_model_name(model)
        self.tokenizer_name, self.dtype_name, self.quantization = tokenizer, dtype, quantization
        self.lora = dict(lora) if lora is not None else None
        self.gradient_checkpointing, self.trust_remote_code = gradient_checkpointing, trust_remote_code
        self._path: str | None = None
        self._tokenizer = None

    @property
    def path(self) -> str | None:
        """The local directory or hub id of the model (a built-in model is built here, once); None for a module."""
        if self._path is None and self.name is not None:
            self._path = resolve_model_path(self.name)
        return self._path

    @property
    def is_adapter(self) -> bool:
        """Whether the model is a saved LoRA adapter (merged on load when unlearning from it)."""
        return self.path is not None and (Path(self.path) / "adapter_config.json").is_file()

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            source = self.tokenizer_name or self.path
            if source is None:
                raise ValueError(f"{self.owner}: pass `tokenizer` when `model` is a module object")
            gguf = self.gguf_file if self.tokenizer_name is None else None
            self._tokenizer = load_tokenizer(source, trust_remote_code=self.trust_remote_code, gguf_file=gguf)
        return self._tokenizer

    def dtype(self, trainer) -> torch.dtype | None:
        """``dtype``, or the one the Trainer's precision implies (None: keep the checkpoint's)."""
        if self.dtype_name is not None:
            return DTYPES[self.dtype_name]
        precision = str(getattr(trainer, "precision", "")) if trainer is not None else ""
        return PRECISION_DTYPES.get(precision, torch.float32 if precision else None)

    def load(self, trainer, fitting: bool) -> nn.Module:
        """The model: the given module, or loaded from ``path``. A saved adapter is evaluated on
        the base quantized as it was trained; unlearning from it (``fitting``) starts from the
        base in the requested precision (full when ``quantization`` is null), adapter merged."""
        if self.module is not None:
            return self.module
        return load_causal_lm(self.path, dtype=self.dtype(trainer), trust_remote_code=self.trust_remote_code,
                              gradient_checkpointing=self.gradient_checkpointing, quantization=self.quantization,
                              adapter_quantization=not fitting, gguf_file=self.gguf_file)

    def add_lora(self, model: nn.Module, options: dict[str, Any], trainer) -> nn.Module:
        """``model`` wrapped with fresh LoRA adapters (only they train)."""
        from lightning.pytorch.strategies import FSDPStrategy
        from peft import PeftModel

        if self.is_adapter and trainer is not None and isinstance(trainer.strategy, FSDPStrategy):
            raise ValueError(f"{self.owner}: unlearning with `lora` from a saved adapter under FSDP is not supported "
                             "(the result must be merged on gathered weights); merge the adapter first")
        if isinstance(model, PeftModel):
            raise ValueError(f"{self.owner}: the model already carries a LoRA adapter on a quantized base "
                             f"({self.path}); start from its full-precision base merged with the adapter, "
                             "or unlearn without `lora`/`quantization`")
        return apply_lora(model, options)
