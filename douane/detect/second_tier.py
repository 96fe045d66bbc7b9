"""The optional second tier of the injection guard: a local transformer classifier (`injection.model:
<dir>`), e.g. a Prompt Guard-class model an operator has downloaded and exported to ONNX.

It is asked only about the texts the first tier (the rules) is unsure of: a score at or above
`injection.second_tier_from` and below the threshold. It can raise a score, never lower it: the
rules' explainable hits stand. Inference runs off the event loop in a worker pool that batches
what concurrent calls ask (one ONNX Runtime run per batch), on a GPU when ONNX Runtime has one.

The folder holds what a Hugging Face ONNX export writes:
- `model.onnx`: inputs `input_ids` (and `attention_mask`, `token_type_ids` if it takes them), int64
  [batch, tokens]; first output the logits [batch, labels];
- `tokenizer.json`: a `tokenizers` tokenizer;
- `config.json` (optional): `id2label`; every label but one named benign/safe/LABEL_0 counts as an
  attack (Prompt Guard: INJECTION and JAILBREAK). Without it, label 1 of two is the attack.
Long texts are read in overlapping windows of `max_length` tokens; the text's score is its worst
window's. Nothing is downloaded: the folder is read as it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from douane.detect.cache import TextCache

log = logging.getLogger(__name__)

BENIGN = re.compile(r"^(benign|safe|label_0|negative|0)$", re.IGNORECASE)


class SecondTierError(Exception):
    """The folder cannot be served as a classifier; the message says what is missing."""


@dataclass
class _Ask:
    texts: list[str]
    future: asyncio.Future[list[float]]
    loop: asyncio.AbstractEventLoop


class SecondTier:
    def __init__(self, folder: str | Path, max_length: int = 512, batch_size: int = 16, workers: int = 1,
                 cache_size: int = 4096):
        self.folder = Path(folder)
        self.name = f"model:{self.folder.name}"
        self.max_length = max_length
        self.batch_size = batch_size
        self._session, self._inputs, self.device = _session(self.folder)
        self._tokenizer = _tokenizer(self.folder)
        self._attack = _attack_labels(self.folder, self._labels())
        self._cache: TextCache[float] = TextCache(cache_size)
        self._queue: queue.Queue[_Ask | None] = queue.Queue()
        self._workers = [threading.Thread(target=self._work, name=f"douane-second-tier-{i}", daemon=True)
                         for i in range(workers)]
        for w in self._workers:
            w.start()

    async def score(self, texts: list[str]) -> list[float]:
        """The probability that each text is an attack; cached texts are not asked again."""
        known = [self._cache.get(t) for t in texts]
        missing = list(dict.fromkeys(t for t, k in zip(texts, known, strict=True) if k is None))
        if missing:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[list[float]] = loop.create_future()
            self._queue.put(_Ask(missing, future, loop))
            scores = dict(zip(missing, await future, strict=True))
            for text, score in scores.items():
                self._cache.put(text, score)
        else:
            scores = {}
        return [k if k is not None else scores[t] for t, k in zip(texts, known, strict=True)]

    def score_now(self, texts: list[str]) -> list[float]:
        """Blocking, for scripts and evaluation: one batch of windows per call."""
        return self._run(texts)

    def close(self) -> None:
        for _ in self._workers:
            self._queue.put(None)

    # -- the worker pool ----------------------------------------------------------------------------

    def _work(self) -> None:
        while (first := self._queue.get()) is not None:
            asks = [first]
            size = len(first.texts)
            while size < self.batch_size:
                try:  # no waiting for company: what arrives while a batch runs makes the next one
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # this worker's stop: seen after the batch
                    break
                asks.append(more)
                size += len(more.texts)
            try:
                flat = self._run([t for a in asks for t in a.texts])
            except Exception as e:  # each caller gets the error: the guard then follows `fail`
                for a in asks:
                    a.loop.call_soon_threadsafe(_settle, a.future, None, e)
                continue
            at = 0
            for a in asks:
                a.loop.call_soon_threadsafe(_settle, a.future, flat[at:at + len(a.texts)], None)
                at += len(a.texts)

    def _run(self, texts: list[str]) -> list[float]:
        import numpy as np

        windows: list[list[int]] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            for w in self._windows(text):
                windows.append(w)
                owner.append(i)
        scores = [0.0] * len(texts)
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start:start + self.batch_size]
            width = max(len(w) for w in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, w in enumerate(chunk):
                ids[row, :len(w)] = w
                mask[row, :len(w)] = 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            logits = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0]
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = shifted / shifted.sum(axis=1, keepdims=True)
            attack = probs[:, self._attack].sum(axis=1)
            for row, p in enumerate(attack):
                i = owner[start + row]
                scores[i] = max(scores[i], float(p))
        return [round(s, 4) for s in scores]

    def _windows(self, text: str) -> list[list[int]]:
        ids = self._tokenizer.encode(text).ids or [0]
        if len(ids) <= self.max_length:
            return [ids]
        step = max(1, self.max_length * 3 // 4)  # a quarter of overlap: an attack across a cut is read whole
        return [ids[i:i + self.max_length] for i in range(0, max(1, len(ids) - self.max_length // 4), step)]

    def _labels(self) -> int:
        shape = self._session.get_outputs()[0].shape
        labels = shape[-1] if shape else None
        if not isinstance(labels, int):
            raise SecondTierError(f"{self.folder / 'model.onnx'}: its first output must be logits [batch, labels] "
                                  f"with a fixed number of labels (got shape {shape})")
        return labels


def _settle(future: asyncio.Future[list[float]], result: list[float] | None, error: Exception | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result or [])


def _session(folder: Path) -> tuple[Any, set[str], str]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise SecondTierError("injection.model as a folder needs ONNX Runtime: pip install 'douane[second-tier]'") \
            from None
    path = folder / "model.onnx"
    if not path.is_file():
        raise SecondTierError(f"{path} is missing: the folder must hold model.onnx and tokenizer.json "
                              "(a Hugging Face ONNX export, e.g. optimum-cli export onnx --model ... DIR)")
    gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one core per worker: the proxy's loop keeps the other
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:
        raise SecondTierError(f"{path}: ONNX Runtime cannot load it: {e}") from None
    inputs = {i.name for i in session.get_inputs()}
    if "input_ids" not in inputs:
        raise SecondTierError(f"{path}: the model takes {sorted(inputs)}, not input_ids")
    return session, inputs, "gpu" if gpu else "cpu"


def _tokenizer(folder: Path) -> Any:
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise SecondTierError(f"{path} is missing: the folder must hold model.onnx and tokenizer.json")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:
        raise SecondTierError(f"{path}: not a tokenizers file: {e}") from None


def _attack_labels(folder: Path, labels: int) -> list[int]:
    config = folder / "config.json"
    if config.is_file():
        try:
            names = {int(k): str(v) for k, v in json.loads(config.read_text()).get("id2label", {}).items()}
        except (ValueError, AttributeError) as e:
            raise SecondTierError(f"{config}: id2label unreadable: {e}") from None
        if names:
            attack = [i for i in range(labels) if not BENIGN.match(names.get(i, str(i)))]
            if attack and len(attack) < labels:
                return attack
            raise SecondTierError(f"{config}: id2label {names} must name exactly one benign label "
                                  "(benign, safe or LABEL_0) beside the attack labels")
    if labels != 2:
        raise SecondTierError(f"{folder}: {labels} labels and no config.json id2label saying which is benign")
    return [1]
