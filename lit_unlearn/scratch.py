"""A tokenizer and a start model from scratch, for your own data (``lit-unlearn tokenizer`` and
``lit-unlearn new-model``): the first steps of building a subject model when no pretrained model
fits (small experiments, tests). With a pretrained model, use its directory and tokenizer instead.

    lit-unlearn tokenizer data/own/full.json data/own/holdout10.json --out work/tokenizer
    lit-unlearn new-model --tokenizer work/tokenizer --out work/start --layers 4 --hidden 128
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from lit_unlearn.datamodules.sources import load_records
from lit_unlearn.models import train_bpe_tokenizer
from lit_unlearn.utils import atomic_dir

TEXT_FIELDS = ("question", "answer", "paraphrased_answer", "perturbed_answer", "text", "prompt", "gt")


def record_texts(paths: list[str], template: str = "Question: {question}\nAnswer: {answer}") -> Iterator[str]:
    """Every text field of the records in ``paths`` (lists flattened), and each question-answer
    pair in the prompt ``template`` (so the template's words become tokens too)."""
    for path in paths:
        for row in load_records(str(path), f"tokenizer file {path}").rows:
            for key in TEXT_FIELDS:
                value = row.get(key)
                for text in value if isinstance(value, list) else [value]:
                    if isinstance(text, str) and text:
                        yield text
            if isinstance(row.get("question"), str) and isinstance(row.get("answer"), str):
                yield template.format(question=row["question"], answer=row["answer"])


def new_model(tokenizer: str, out: str, layers: int = 4, hidden: int = 128, heads: int = 4, context: int = 256,
              seed: int = 0) -> Path:
    """A randomly initialised Llama-style model for ``tokenizer``, saved with it to ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lit_unlearn.models import load_tokenizer

    for name, value in (("layers", layers), ("hidden", hidden), ("heads", heads), ("context", context)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"new-model: --{name} must be a positive integer, got {value!r}")
    if hidden % heads:
        raise ValueError(f"new-model: --hidden {hidden} must be a multiple of --heads {heads}")
    tok = load_tokenizer(tokenizer)
    if tok.pad_token_id is None or tok.eos_token_id is None:
        raise ValueError(f"new-model: the tokenizer '{tokenizer}' needs a pad and an EOS token")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=context, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    tok.model_max_length = context
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        info = {"tokenizer": str(tokenizer), "layers": layers, "hidden": hidden, "heads": heads, "context": context,
                "seed": seed, "parameters": sum(p.numel() for p in model.parameters())}
        (Path(tmp) / "build_info.json").write_text(json.dumps(info, indent=2))
    return Path(out)


def main(argv: list[str]) -> None:
    """``lit-unlearn tokenizer ...`` and ``lit-unlearn new-model ...``."""
    parser = argparse.ArgumentParser(prog="lit-unlearn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, exit_on_error=False)
    sub = parser.add_subparsers(dest="command", required=True)
    tp = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on your data files")
    tp.add_argument("files", nargs="+",
                    help="data files (.json, .jsonl, .csv, .parquet) in the TOFU schema or with 'text'")
    tp.add_argument("--out", required=True, help="directory to save the tokenizer to")
    tp.add_argument("--vocab-size", type=int, default=2048)
    tp.add_argument("--context", type=int, default=256, help="the tokenizer's model_max_length")
    mp = sub.add_parser("new-model", help="a randomly initialised Llama-style start model for a tokenizer")
    mp.add_argument("--tokenizer", required=True, help="a tokenizer directory, hub id, or a model directory")
    mp.add_argument("--out", required=True, help="directory to save the model (and its tokenizer) to")
    mp.add_argument("--layers", type=int, default=4)
    mp.add_argument("--hidden", type=int, default=128)
    mp.add_argument("--heads", type=int, default=4)
    mp.add_argument("--context", type=int, default=256, help="positions (prompt + answer + generated tokens)")
    mp.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "tokenizer":
        if args.vocab_size < 258:
            raise ValueError(f"tokenizer: --vocab-size must be at least 258 (256 bytes + 2 special tokens), "
                             f"got {args.vocab_size}")
        tok = train_bpe_tokenizer(record_texts(args.files), args.vocab_size, args.context)
        with atomic_dir(args.out) as tmp:
            tok.save_pretrained(tmp)
        print(f"lit-unlearn: trained a tokenizer of {len(tok)} tokens on {len(args.files)} file(s) into {args.out}")
    else:
        path = new_model(args.tokenizer, args.out, args.layers, args.hidden, args.heads, args.context, args.seed)
        info = json.loads((path / "build_info.json").read_text())
        print(f"lit-unlearn: a new model of {info['parameters']:,} parameters ({args.layers} layers, width "
              f"{args.hidden}, {args.context} positions) in {path}")
