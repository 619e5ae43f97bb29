"""A checkpoint's own tokenizer as a keras-hub tokenizer, and tokenizer files written back.

- WordPiece (BERT): ``vocab.txt``, with the lower-casing and accent stripping that the
  checkpoint's ``tokenizer.json`` normaliser (or ``tokenizer_config.json``) sets.
- Byte-level BPE (GPT-2): ``vocab.json`` + ``merges.txt``.
- SentencePiece (T5): ``spiece.model``, read by keras-hub's ``T5Tokenizer`` (pad 0, end 1).
- keras-hub preset directories: their own saved tokenizer.
"""

from __future__ import annotations

import json
import pathlib

from bigkeras.checkpoints.common import first_line, read_json, read_text
from bigkeras.checkpoints.mapping import CheckpointError
from bigkeras.layers.tokenizers import HuggingFaceBertTokenizer

BERT_SPECIAL_TOKENS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]",
                       "unk_token": "[UNK]"}  # fmt: skip
GPT2_SPECIAL_TOKENS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
T5_SPECIAL_TOKENS = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
SENTENCEPIECE = "spiece.model"  # Hugging Face T5's SentencePiece model file


def load_tokenizer(directory: pathlib.Path):
    """The keras-hub tokenizer of a checkpoint directory.

    Returns:
        A ``keras_hub.models.BertTokenizer`` that normalises text as Hugging Face does
        (``HuggingFaceBertTokenizer``, from ``vocab.txt``), a ``GPT2Tokenizer``
        (``vocab.json`` + ``merges.txt``), a ``T5Tokenizer`` (``spiece.model``; it ends each
        text with ``</s>``, as Hugging Face's does) or a keras-hub preset's own tokenizer, with
        the checkpoint's special tokens at the checkpoint's ids.
    """
    import keras_hub

    if (directory / "vocab.txt").is_file():
        lowercase, strip_accents = _wordpiece_normalisation(directory)
        _check_special_tokens(directory / "vocab.txt", BERT_SPECIAL_TOKENS.values())
        return HuggingFaceBertTokenizer(
            vocabulary=str(directory / "vocab.txt"), lowercase=lowercase, strip_accents=strip_accents
        )
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        vocabulary, merges = _byte_pair_files(directory)
        return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)
    if (directory / SENTENCEPIECE).is_file():
        proto = (directory / SENTENCEPIECE).read_bytes()
        try:
            # As Hugging Face's T5 tokenizer: "</s>" ends every text (pre-trained T5 expects it).
            return keras_hub.models.T5Tokenizer(proto=proto, add_eos=True)
        except Exception as error:  # noqa: BLE001 - SentencePiece raises RuntimeError, TF errors or ValueError
            raise CheckpointError(f"{directory / SENTENCEPIECE} is not a usable SentencePiece model: "
                                  f"{first_line(error)}") from None  # fmt: skip
    if (directory / "tokenizer.json").is_file() and (directory / "assets").is_dir():
        read_json(directory / "tokenizer.json")
        try:
            return keras_hub.models.Tokenizer.from_preset(str(directory))
        except (ValueError, OSError, KeyError, TypeError) as error:
            raise CheckpointError(f"{directory}: keras-hub could not load this preset's tokenizer: "
                                  f"{first_line(error)}") from None  # fmt: skip
    raise CheckpointError(
        f"{directory} has no tokenizer files bigkeras reads: vocab.txt (WordPiece), vocab.json + merges.txt "
        f"(GPT-2 byte-level BPE), {SENTENCEPIECE} (T5 SentencePiece) or a keras-hub preset's tokenizer.json + assets/."
    )


def _wordpiece_normalisation(directory: pathlib.Path) -> tuple[bool, bool]:
    """(lowercase, strip_accents) as the checkpoint's tokenizer normalises text."""
    lowercase, strip_accents = True, None  # BertTokenizer's defaults
    tokenizer_json, config = directory / "tokenizer.json", directory / "tokenizer_config.json"
    if tokenizer_json.is_file():
        normalizer = read_json(tokenizer_json).get("normalizer") or {}
        if not isinstance(normalizer, dict) or normalizer.get("type") != "BertNormalizer":
            raise CheckpointError(
                f"{tokenizer_json}: field 'normalizer' {normalizer!r:.80} is not supported; supported: BertNormalizer."
            )
        lowercase, strip_accents = normalizer.get("lowercase", True), normalizer.get("strip_accents")
    elif config.is_file():
        settings = read_json(config)
        lowercase, strip_accents = settings.get("do_lower_case", True), settings.get("strip_accents")
    # Hugging Face: strip_accents None follows lowercase.
    return bool(lowercase), bool(lowercase if strip_accents is None else strip_accents)


def _check_special_tokens(vocab: pathlib.Path, tokens) -> None:
    words = set(read_text(vocab).split("\n"))
    missing = [t for t in tokens if t not in words]
    if missing:
        raise CheckpointError(f"{vocab} lacks the special token(s) {missing} that a BERT tokenizer needs.")


def _byte_pair_files(directory: pathlib.Path) -> tuple[dict, list]:
    """(vocabulary, merges) of a GPT-2 tokenizer, checked: token -> id, and merge rules."""
    vocabulary = read_json(directory / "vocab.json")
    bad = next(((k, v) for k, v in vocabulary.items() if isinstance(v, bool) or not isinstance(v, int)), None)
    if bad is not None:
        raise CheckpointError(f"{directory / 'vocab.json'}: token {bad[0]!r} has id {bad[1]!r}; ids are integers.")
    lines = [line for line in read_text(directory / "merges.txt").splitlines() if line.strip()]
    merges = [line for line in lines if not line.lstrip().startswith("#version:")]
    malformed = next((i for i, line in enumerate(merges) if len(line.split(" ")) != 2), None)
    if malformed is not None:
        raise CheckpointError(
            f"{directory / 'merges.txt'}: merge rule {merges[malformed]!r:.80} is not two tokens separated by a space."
        )
    return vocabulary, merges


def save_tokenizer(tokenizer, directory: pathlib.Path, *, max_length: int) -> None:
    """Write a keras-hub WordPiece, byte-pair or SentencePiece tokenizer as Hugging Face tokenizer files."""
    import keras_hub

    if isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
        (directory / "vocab.txt").write_text("\n".join(tokenizer.get_vocabulary()) + "\n", encoding="utf-8")
        lowercase = getattr(tokenizer, "text_lowercase", tokenizer.lowercase)
        strip_accents = getattr(tokenizer, "text_strip_accents", tokenizer.strip_accents)
        settings = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase, "strip_accents": strip_accents,
                    "model_max_length": max_length}  # fmt: skip
        special = BERT_SPECIAL_TOKENS
    elif isinstance(tokenizer, keras_hub.tokenizers.BytePairTokenizer):
        vocabulary = json.dumps(dict(tokenizer.vocabulary), ensure_ascii=False)
        (directory / "vocab.json").write_text(vocabulary, encoding="utf-8")
        merges = [m for m in tokenizer.merges if not m.lstrip().startswith("#version:")]
        (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        settings, special = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": max_length}, GPT2_SPECIAL_TOKENS
    elif isinstance(tokenizer, keras_hub.tokenizers.SentencePieceTokenizer):
        proto = tokenizer.proto
        (directory / SENTENCEPIECE).write_bytes(proto if isinstance(proto, bytes) else pathlib.Path(proto).read_bytes())
        # No <extra_id_*> sentinels beyond the model's own pieces: the vocabulary is the model's.
        settings = {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": max_length}
        special = T5_SPECIAL_TOKENS
    else:
        raise CheckpointError(
            "save_hf writes WordPiece, byte-pair or SentencePiece keras-hub tokenizers, got "
            f"{type(tokenizer).__name__}."
        )
    (directory / "tokenizer_config.json").write_text(json.dumps({**settings, **special}, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
