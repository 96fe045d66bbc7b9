"""A tiny transformer-shaped classifier the tests build themselves (no download): a WordLevel
tokenizer and an ONNX graph summing per-token logits, exported as a Hugging Face ONNX folder is."""

from __future__ import annotations

import json
from pathlib import Path

ATTACK_WORDS = ("pwned", "exfiltrate")  # each pushes the INJECTION logit far up
JAILBREAK_WORDS = ("dan",)
WORDS = ("hello", "what", "is", "the", "weather", "say", "you", "are", "now", "please", *ATTACK_WORDS,
         *JAILBREAK_WORDS)


def build(folder: Path, labels: tuple[str, ...] = ("BENIGN", "INJECTION", "JAILBREAK")) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))

    table = np.zeros((len(vocab), len(labels)), dtype=np.float32)
    table[:, 0] = 1.0  # every word leans benign
    for w in ATTACK_WORDS:
        table[vocab[w], 1] = 8.0
    for w in JAILBREAK_WORDS:
        table[vocab[w], 2 if len(labels) > 2 else 1] = 8.0
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["per_token"]),  # [B, T, L]
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask3"]),  # [B, T, 1]
        helper.make_node("Mul", ["per_token", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["logits"], keepdims=0),  # [B, L]
    ]
    graph = helper.make_graph(
        nodes, "tiny-injection",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(labels)])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
         numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    (folder / "config.json").write_text(json.dumps({"id2label": {str(i): n for i, n in enumerate(labels)}}))
    return folder
