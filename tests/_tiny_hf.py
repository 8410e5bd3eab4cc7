"""Tiny random BERT / RoBERTa Hugging Face folders (weights + tokenizer), written by
transformers + torch, for the encoder, export and prediction tests."""
from __future__ import annotations

from pathlib import Path

WORDS = ("i am so happy today this is terrible hate it what a long day has been the train "
         "leaves at nine thank you nice scared truth never speak again she finally said yes "
         "context here after years of saving opened her bakery tom waited on empty platform "
         "can not believe they cancelled show waste my evening").split()


def make_tiny(folder: Path, family: str, num_labels: int = 5, type_vocab_size: int | None = None,
              head: bool = True, seed: int = 0) -> Path:
    """Save a tiny random `family` model + tokenizer in `folder`; returns the folder."""
    import torch
    import transformers
    folder.mkdir(parents=True, exist_ok=True)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64, num_labels=num_labels,
                  problem_type="multi_label_classification")
    if family == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        vocab = specials + sorted(set(WORDS)) + list("abcdefghijklmnopqrstuvwxyz.,!?'")
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tok = transformers.BertTokenizer(str(folder / "vocab.txt"))
        config = transformers.BertConfig(vocab_size=len(vocab),
                                         type_vocab_size=type_vocab_size or 2, **common)
        cls = (transformers.BertForSequenceClassification if head else transformers.BertModel)
    else:
        from tokenizers import ByteLevelBPETokenizer
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator([" ".join(WORDS)] * 3, vocab_size=300, min_frequency=1,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        bpe.save_model(str(folder))
        tok = transformers.RobertaTokenizer(str(folder / "vocab.json"),
                                            str(folder / "merges.txt"))
        config = transformers.RobertaConfig(
            vocab_size=bpe.get_vocab_size(), type_vocab_size=type_vocab_size or 1,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, **common)
        cls = (transformers.RobertaForSequenceClassification if head
               else transformers.RobertaModel)
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_params_checkpoint(model, ckpt_dir: Path, metadata: dict, step: int = 1) -> Path:
    """A checkpoint written by the trainer's own Checkpointer (params, a dummy optimizer
    state, data state and the "metadata" item that export / predict read)."""
    import numpy as np
    from flax import nnx
    from emopillars_jax.checkpointing import Checkpointer
    cfg = model.config
    meta = {"encoder_config": cfg.to_hf(), "num_labels": cfg.num_labels, "step": step,
            **metadata}
    ckpt = Checkpointer(ckpt_dir, every_steps=1, keep=2, keep_best=False, async_save=False)
    ckpt.save(step, nnx.to_pure_dict(nnx.state(model, nnx.Param)),
              {"count": np.zeros((), np.int32)}, {"epoch": 0, "step": step}, meta, force=True)
    ckpt.close()
    return ckpt_dir
