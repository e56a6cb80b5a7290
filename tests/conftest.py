"""Session fixtures: a private LIT_UNLEARN_HOME, the tiny benchmark's models, a random tiny model."""

from __future__ import annotations

import os
import warnings

import pytest

# No hub is reachable in CI: fail fast instead of retrying (read by huggingface_hub at import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


@pytest.fixture(scope="session", autouse=True)
def lit_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("lit_unlearn_home")
    old = os.environ.get("LIT_UNLEARN_HOME")
    os.environ["LIT_UNLEARN_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("LIT_UNLEARN_HOME", None)
    else:
        os.environ["LIT_UNLEARN_HOME"] = old


@pytest.fixture(scope="session")
def tiny_subject(lit_home) -> str:
    """Directory of builtin:tiny/subject (built once per session, a few seconds)."""
    from lit_unlearn.zoo import resolve

    return resolve("builtin:tiny/subject")


@pytest.fixture(scope="session")
def tiny_gold(lit_home) -> str:
    from lit_unlearn.zoo import resolve

    return resolve("builtin:tiny/retain90")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(lit_home) -> str:
    from lit_unlearn.datamodules.fictitious import FictitiousBenchmark, ensure_tokenizer

    return ensure_tokenizer(FictitiousBenchmark("tiny"))


@pytest.fixture(scope="session")
def tokenizer(tiny_tokenizer_dir):
    from lit_unlearn.models import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory, tokenizer) -> str:
    """A randomly initialised 2-layer, 32-wide Llama with the tiny benchmark's tokenizer."""
    from tests.helpers.training import save_random_llama

    return save_random_llama(tokenizer, tmp_path_factory.mktemp("random_llama"))


@pytest.fixture(scope="session")
def tiny_bench():
    from lit_unlearn.datamodules.fictitious import FictitiousBenchmark

    return FictitiousBenchmark("tiny")
