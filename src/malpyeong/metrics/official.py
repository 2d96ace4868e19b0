"""Task metrics, computed the way the official NIKL (국립국어원) scorer computes them.

CCI (대화 맥락 추론) is scored by accuracy; ``cci_report`` adds the breakdowns that explain a
number (per category, confusion matrix, gold option position).

DCS (일상 대화 요약) is scored on the leaderboard by the plain mean of three metrics, each x100:

* ROUGE-1 F over Mecab morphemes -- a py-rouge style scorer (teddysum/korean_evaluation
  ``rouge_metric.py``): the first 1,000 whitespace words are kept, the text is lowercased, every
  character outside ``[A-Za-z0-9가-힣]`` becomes a space, Mecab splits it into morphemes, and
  P = overlap/len(pred), R = overlap/len(ref) with a clipped multiset overlap;
  F = P*R / (0.5*P + 0.5*R) (0 when P or R is 0), averaged over items.
* BERTScore F1 with bert-base-multilingual-cased, layer 9, no idf, no baseline rescaling, as
  ``bert_score.score(model_type=...)`` computes it.
* BLEURT-20, here from a local PyTorch port checkpoint (the lucadiliello/BLEURT-20 layout).

A metric whose model cannot be loaded is reported as ``None`` with a notice, and the aggregate is
taken over the metrics that are available (and says which), so evaluation still works offline.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from malpyeong.device import default_device
from malpyeong.errors import UserError

# ----------------------------------------------------------------------------------------- CCI

CCI_LABELS = ("inference_1", "inference_2", "inference_3")


def _check_lengths(gold: Sequence[Any], pred: Sequence[Any]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold items but {len(pred)} predictions")
    if not gold:
        raise ValueError("no items to score")


def accuracy(gold: Sequence[str], pred: Sequence[str]) -> float:
    """Fraction of items whose predicted label equals the gold label."""
    _check_lengths(gold, pred)
    return sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)


def _rate(n: int, correct: int) -> dict[str, float | int]:
    return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0}


def cci_report(
    gold_labels: Sequence[str],
    pred_labels: Sequence[str],
    categories: Sequence[str | Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Accuracy plus the breakdowns that show where a CCI model fails.

    ``categories`` holds each item's category (a string, or several; an item then counts in
    each). The confusion matrix has gold labels as rows and predictions as columns, in
    ``CCI_LABELS`` order; a prediction outside the three labels counts as wrong and is tallied in
    ``invalid_predictions`` instead of the matrix.
    """
    _check_lengths(gold_labels, pred_labels)
    if categories is not None and len(categories) != len(gold_labels):
        raise ValueError(f"{len(gold_labels)} gold items but {len(categories)} categories")
    index = {label: i for i, label in enumerate(CCI_LABELS)}
    bad_gold = sorted({g for g in gold_labels if g not in index})
    if bad_gold:
        raise ValueError(f"gold labels outside {CCI_LABELS}: {bad_gold}")

    matrix = [[0] * len(CCI_LABELS) for _ in CCI_LABELS]
    invalid = 0
    by_cat: dict[str, list[int]] = {}
    by_pos = {label: [0, 0] for label in CCI_LABELS}
    for i, (g, p) in enumerate(zip(gold_labels, pred_labels, strict=True)):
        hit = int(g == p)
        if p in index:
            matrix[index[g]][index[p]] += 1
        else:
            invalid += 1
        by_pos[g][0] += 1
        by_pos[g][1] += hit
        if categories is not None:
            cats = categories[i]
            for cat in [cats] if isinstance(cats, str) else cats:
                counts = by_cat.setdefault(cat, [0, 0])
                counts[0] += 1
                counts[1] += hit

    correct = sum(g == p for g, p in zip(gold_labels, pred_labels, strict=True))
    report: dict[str, Any] = {
        "n": len(gold_labels),
        "correct": correct,
        "accuracy": correct / len(gold_labels),
        "confusion": {"labels": list(CCI_LABELS), "rows": "gold", "cols": "pred", "matrix": matrix},
        "invalid_predictions": invalid,
        "by_gold_position": {label: _rate(*by_pos[label]) for label in CCI_LABELS},
        "pred_distribution": {label: sum(row[j] for row in matrix) for j, label in enumerate(CCI_LABELS)},
    }
    if categories is not None:
        report["by_category"] = {cat: _rate(*by_cat[cat]) for cat in sorted(by_cat)}
    return report


# ------------------------------------------------------------------------------------- ROUGE-1

ROUGE_LENGTH_LIMIT = 1000
_NOT_KEPT = re.compile("[^A-Za-z0-9가-힣]")


@lru_cache(maxsize=1)
def _mecab() -> Any:
    """The one MeCab instance (python-mecab-ko ships mecab-ko-dic, so it works offline)."""
    try:
        from mecab import MeCab
    except ImportError as err:
        raise UserError(
            "ROUGE-1 needs the Mecab morpheme analyser, which is not installed",
            hint="pip install python-mecab-ko",
        ) from err
    return MeCab()


def rouge_tokens(text: str) -> tuple[str, ...]:
    """The morphemes the official scorer counts for ``text`` (cached per distinct string)."""
    return _rouge_counts(text)[0]


@lru_cache(maxsize=200_000)
def _rouge_counts(text: str) -> tuple[tuple[str, ...], Counter[str]]:
    # Truncation comes first and counts raw whitespace words, punctuation included, as py-rouge's
    # limit_length does; only then lowercase, clean, analyse.
    kept = " ".join(text.split()[:ROUGE_LENGTH_LIMIT])
    cleaned = _NOT_KEPT.sub(" ", kept.lower()).strip()
    # The official scorer joins the morphemes with spaces and splits again: same as dropping
    # empty or blank surfaces and splitting any that contain whitespace.
    tokens = tuple(" ".join(_mecab().morphs(cleaned)).split()) if cleaned else ()
    return tokens, Counter(tokens)


def _prf(n_pred: int, n_ref: int, overlap: int, alpha: float = 0.5) -> dict[str, float]:
    """py-rouge's precision/recall/F, written in the same arithmetic order for bit parity."""
    p = 0.0 if n_pred == 0 else overlap / float(n_pred)
    r = 0.0 if n_ref == 0 else overlap / float(n_ref)
    f = 0.0 if (r == 0.0 or p == 0.0) else p * r / ((1 - alpha) * p + alpha * r)
    return {"p": p, "r": r, "f": f}


def rouge1_pair(ref: str, pred: str) -> dict[str, float]:
    """ROUGE-1 precision, recall and F of one prediction against its reference."""
    ref_tokens, ref_counts = _rouge_counts(ref)
    pred_tokens, pred_counts = _rouge_counts(pred)
    overlap = sum((pred_counts & ref_counts).values())
    return _prf(len(pred_tokens), len(ref_tokens), overlap)


def rouge1_items(refs: Sequence[str], preds: Sequence[str]) -> list[float]:
    """Per-item ROUGE-1 F (what ensembles and error analysis need)."""
    _check_lengths(refs, preds)
    return [rouge1_pair(r, p)["f"] for r, p in zip(refs, preds, strict=True)]


def _official_mean(values: Sequence[float]) -> float:
    # py-rouge adds the item scores in order and divides once (only when there is more than one).
    total = 0.0
    for v in values:
        total += v
    return total / len(values) if len(values) > 1 else total


def rouge1(refs: Sequence[str], preds: Sequence[str]) -> float:
    """Corpus ROUGE-1 F as the leaderboard computes it: the mean of the per-item F (0..1)."""
    return _official_mean(rouge1_items(refs, preds))


# ----------------------------------------------------------------------------------- results


@dataclass
class MetricResult:
    """One corpus metric: ``value`` is None when its model could not be used (see ``notice``)."""

    name: str
    value: float | None
    per_item: list[float] | None = None
    notice: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _unavailable(name: str, why: str) -> MetricResult:
    return MetricResult(name=name, value=None, notice=f"{name} not computed: {why}")


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


# ------------------------------------------------------------------------------ metric models

T = TypeVar("T")
_REACHABLE: dict[str, bool] = {}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub can be reached now (one TCP connection, asked once a process):
    without it a download is never attempted, so transformers' five retries with their
    warnings (a minute and a half) never happen."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    if host not in _REACHABLE:
        try:
            socket.create_connection((host, endpoint.port or 443), timeout=timeout).close()
            _REACHABLE[host] = True
        except OSError:
            _REACHABLE[host] = False
    return _REACHABLE[host]


def cached_file(name: str, filename: str = "config.json") -> str | None:
    """The local hub cache's copy of ``filename`` of the hub id ``name``, if any."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, filename)
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        return None
    return found if isinstance(found, str) else None


def metric_model_problem(name: str) -> str | None:
    """Why the metric model ``name`` (a folder or a hub id) cannot be loaded here, found
    without loading it, or None when it can be tried."""
    path = Path(name)
    if path.exists():
        if not path.is_dir():
            return "is a file, not a model folder"
        if not any((path / f).is_file() for f in ("config.json", "modules.json")):
            return "not a model folder (no config.json)"
        return None
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return "folder not found"
    if cached_file(name) or hub_reachable():
        return None
    return "not a local folder nor in the local hub cache, and the hub cannot be reached"


def load_metric_model(
    load: Callable[[str], T], name: str | None, *, default: str | None, option: str, what: str
) -> tuple[T | None, str | None]:
    """A metric's model, as ``(model, notice)``. The one the user named (``name``, from
    ``--OPTION``) loads or stops the command with one line: what they asked for is never
    quietly "not computed". Without a name the ``default`` is used when it can be: otherwise
    ``(None, notice)``, one line saying why, found without a download attempt."""
    target = name if name is not None else default
    if target is None:
        return None, f"{what} not computed: pass --{option}"
    problem = metric_model_problem(target)
    if problem is None:
        try:
            return load(target), None
        except Exception as err:  # noqa: BLE001 - any load failure, named below
            problem = f"cannot load it ({_short(err)})"
    if name is not None:
        raise UserError(problem, file=name, field=option, hint=f"give a local {what} model folder")
    return (
        None,
        f"{what} not computed: the default model '{target}': {problem}; pass --{option} with a local copy",
    )


# ----------------------------------------------------------------------------------- BERTScore

BERTSCORE_MODEL = "bert-base-multilingual-cased"
BERTSCORE_LAYER = 9


class BertScorer:
    """BERTScore (greedy cosine matching of contextual token embeddings), as bert-score does it.

    Same choices as ``bert_score.score(model_type=..., idf=False)``: the text is stripped and
    encoded with special tokens (truncated to the model's length); the representation is
    ``hidden_states[layer]``; every token of one side is matched to its most similar token of
    the other side, [CLS]/[SEP] included as match targets, but [CLS]/[SEP] get weight 0 in the
    averages; F = 2PR/(P+R); an empty side scores 0. One difference: bert-score pads a batch
    with zero-similarity slots, so a token whose best cosine is negative scores 0 there; here the
    true maximum is used (cosines in mBERT layer 9 are in practice positive).
    """

    def __init__(
        self,
        model_path: str = BERTSCORE_MODEL,
        layer: int = BERTSCORE_LAYER,
        device: str | None = None,
        batch_size: int = 32,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_path, self.layer, self.batch_size = str(model_path), layer, batch_size
        self.device = device or default_device()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        model = AutoModel.from_pretrained(self.model_path)
        n_layers = model.config.num_hidden_layers
        if not 0 <= layer <= n_layers:
            raise ValueError(f"model has {n_layers} layers; layer {layer} requested")
        # Layers above the one we read are dead weight: drop them (what bert-score does too).
        encoder = getattr(model, "encoder", None)
        if encoder is not None and isinstance(getattr(encoder, "layer", None), torch.nn.ModuleList):
            encoder.layer = encoder.layer[:layer]
            model.config.num_hidden_layers = layer
        self.model = model.to(self.device).eval()
        limit = min(
            int(self.tokenizer.model_max_length), int(getattr(model.config, "max_position_embeddings", 512))
        )
        self.max_length = limit
        self.special_ids = {
            i for i in (self.tokenizer.cls_token_id, self.tokenizer.sep_token_id) if i is not None
        }

    def _embed(self, texts: Sequence[str]) -> dict[str, tuple[Any, Any]]:
        """Unit-normalised layer embeddings and 0/1 weights per distinct text, length-batched."""
        import torch

        unique = sorted(set(texts))
        ids = {
            t: self.tokenizer(
                t.strip(), add_special_tokens=True, truncation=True, max_length=self.max_length
            )["input_ids"]
            for t in unique
        }
        unique.sort(key=lambda t: len(ids[t]), reverse=True)
        pad = self.tokenizer.pad_token_id or 0
        out: dict[str, tuple[Any, Any]] = {}
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start : start + self.batch_size]
            width = max(len(ids[t]) for t in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, t in enumerate(batch):
                input_ids[row, : len(ids[t])] = torch.tensor(ids[t])
                mask[row, : len(ids[t])] = 1
            with torch.inference_mode():
                hidden = self.model(
                    input_ids=input_ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    output_hidden_states=True,
                ).hidden_states[self.layer]
            hidden = hidden.float().cpu()
            for row, t in enumerate(batch):
                emb = hidden[row, : len(ids[t])]
                emb = emb / emb.norm(dim=-1, keepdim=True)
                weight = torch.tensor([0.0 if i in self.special_ids else 1.0 for i in ids[t]])
                out[t] = (emb, weight)
        return out

    def score(self, refs: Sequence[str], preds: Sequence[str]) -> list[dict[str, float]]:
        """Per-item P, R, F1."""
        _check_lengths(refs, preds)
        table = self._embed(list(refs) + list(preds))
        scores = []
        for ref, pred in zip(refs, preds, strict=True):
            r_emb, r_w = table[ref]
            c_emb, c_w = table[pred]
            if len(r_w) <= 2 or len(c_w) <= 2 or r_w.sum() == 0 or c_w.sum() == 0:
                scores.append({"p": 0.0, "r": 0.0, "f": 0.0})
                continue
            sim = c_emb @ r_emb.T
            p = (sim.max(dim=1).values * c_w).sum() / c_w.sum()
            r = (sim.max(dim=0).values * r_w).sum() / r_w.sum()
            f = 2 * p * r / (p + r)
            f_value = float(f)
            scores.append({"p": float(p), "r": float(r), "f": 0.0 if math.isnan(f_value) else f_value})
        return scores


def bertscore(
    refs: Sequence[str],
    preds: Sequence[str],
    model_path: str = BERTSCORE_MODEL,
    *,
    layer: int = BERTSCORE_LAYER,
    device: str | None = None,
    batch_size: int = 32,
    required: bool = False,
) -> MetricResult:
    """Mean BERTScore F1 (0..1); ``value`` None with a notice when the default model can't be
    loaded, a ``UserError`` when the model the user named (``required``) can't."""
    _check_lengths(refs, preds)
    scorer, notice = load_metric_model(
        lambda p: BertScorer(p, layer=layer, device=device, batch_size=batch_size),
        str(model_path) if required else None,
        default=str(model_path),
        option="bertscore_model",
        what="bertscore",
    )
    if scorer is None:
        return MetricResult(name="bertscore", value=None, notice=notice)
    f1 = [s["f"] for s in scorer.score(refs, preds)]
    return MetricResult(
        "bertscore", sum(f1) / len(f1), per_item=f1, details={"model": str(model_path), "layer": layer}
    )


# -------------------------------------------------------------------------------------- BLEURT

BLEURT_MAX_SEQ_LENGTH = 512


class BleurtScorer:
    """BLEURT-20 from the PyTorch port layout (lucadiliello/BLEURT-20 and its -D12/-D6/-D3).

    The folder holds ``config.json`` (model_type "bleurt"), ``model.safetensors`` or
    ``pytorch_model.bin`` (weights named ``bleurt.*`` and ``classifier.*``) and ``spm.model``.
    The port's own package does not import under transformers 5, so the weights are loaded into
    transformers' RemBERT classes, which have the same layout (factorised embeddings, a
    projection to the hidden size, BERT layers, tanh pooler, linear head). Inputs are built as
    the original BLEURT does: SentencePiece pieces, ``[CLS] ref [SEP] cand [SEP]`` with segment
    ids 0/1, pairs cut to 512 tokens by dropping the last token of the longer side.
    """

    def __init__(self, checkpoint: str | Path, device: str | None = None, batch_size: int = 16) -> None:
        import torch
        from transformers import RemBertConfig, RemBertForSequenceClassification

        folder = Path(checkpoint)
        if not folder.is_dir():
            raise FileNotFoundError(f"no folder at {folder}")
        conf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if conf.get("model_type") != "bleurt":
            raise ValueError(f"config.json model_type is {conf.get('model_type')!r}, not 'bleurt'")
        spm_path = folder / "spm.model"
        if not spm_path.is_file():
            raise FileNotFoundError(
                f"no spm.model in {folder} (only SentencePiece BLEURT-20 checkpoints are supported)"
            )
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
        hidden = conf["hidden_size"]
        emb = conf.get("embedding_size") or hidden
        config = RemBertConfig(
            vocab_size=conf["vocab_size"],
            hidden_size=hidden,
            num_hidden_layers=conf["num_hidden_layers"],
            num_attention_heads=conf["num_attention_heads"],
            input_embedding_size=emb,
            output_embedding_size=emb,
            intermediate_size=conf["intermediate_size"],
            hidden_act=conf.get("hidden_act", "gelu"),
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            classifier_dropout_prob=0.0,
            max_position_embeddings=conf["max_position_embeddings"],
            type_vocab_size=conf.get("type_vocab_size", 2),
            layer_norm_eps=conf.get("layer_norm_eps", 1e-12),
            pad_token_id=conf.get("pad_token_id", 0),
            bos_token_id=None,
            eos_token_id=None,
            num_labels=1,
        )
        model = RemBertForSequenceClassification(config)
        state = _bleurt_state_dict(folder, hidden, emb)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(
                f"weights do not match a BLEURT model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        self.device = device or default_device()
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_seq_length = min(BLEURT_MAX_SEQ_LENGTH, conf["max_position_embeddings"])
        self.cls_id = self.sp.piece_to_id("[CLS]")
        self.sep_id = self.sp.piece_to_id("[SEP]")
        self._torch = torch

    def encode(self, ref: str, cand: str) -> tuple[list[int], list[int]]:
        """Token ids and segment ids of one pair, exactly as BLEURT's ``encode_example``."""
        ref_ids = [self.sp.piece_to_id(p) for p in self.sp.encode(ref, out_type=str)]
        cand_ids = [self.sp.piece_to_id(p) for p in self.sp.encode(cand, out_type=str)]
        budget = self.max_seq_length - 3
        while len(ref_ids) + len(cand_ids) > budget:
            (ref_ids if len(ref_ids) > len(cand_ids) else cand_ids).pop()
        ids = [self.cls_id, *ref_ids, self.sep_id, *cand_ids, self.sep_id]
        segments = [0] * (len(ref_ids) + 2) + [1] * (len(cand_ids) + 1)
        return ids, segments

    def score(self, refs: Sequence[str], preds: Sequence[str]) -> list[float]:
        """Per-item BLEURT scores (the regression head's output, unclipped)."""
        torch = self._torch
        _check_lengths(refs, preds)
        encoded = [self.encode(r, c) for r, c in zip(refs, preds, strict=True)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]), reverse=True)
        result = [0.0] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(encoded[i][0]) for i in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            seg = torch.zeros_like(ids)
            mask = torch.zeros_like(ids)
            for k, i in enumerate(rows):
                tok, segments = encoded[i]
                ids[k, : len(tok)] = torch.tensor(tok)
                seg[k, : len(tok)] = torch.tensor(segments)
                mask[k, : len(tok)] = 1
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids.to(self.device),
                    token_type_ids=seg.to(self.device),
                    attention_mask=mask.to(self.device),
                ).logits
            for k, value in zip(rows, logits[:, 0].float().cpu().tolist(), strict=True):
                result[k] = value
        return result


def _bleurt_state_dict(folder: Path, hidden: int, emb: int) -> dict[str, Any]:
    """The port's weights renamed to RemBERT's names (identity projection when it has none)."""
    import torch

    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        raw = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        raw = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {folder}")
    state = {}
    for key, value in raw.items():
        if key.endswith(("position_ids", "token_type_ids")) and "embeddings" in key:
            continue  # buffers, not weights
        if key.startswith("bleurt."):
            key = "rembert." + key[len("bleurt.") :]
        key = key.replace("encoder.embedding_projection.", "encoder.embedding_hidden_mapping_in.")
        state[key] = value
    proj = "rembert.encoder.embedding_hidden_mapping_in."
    if proj + "weight" not in state and emb == hidden:
        state[proj + "weight"] = torch.eye(hidden)
        state[proj + "bias"] = torch.zeros(hidden)
    return state


def bleurt(
    refs: Sequence[str],
    preds: Sequence[str],
    checkpoint: str | Path | None,
    *,
    device: str | None = None,
    batch_size: int = 16,
) -> MetricResult:
    """Mean BLEURT-20 score (about 0..1); ``value`` None with a notice when no checkpoint is
    given; a checkpoint that was given but does not load is a ``UserError`` (exit 2), never a
    score silently left out."""
    _check_lengths(refs, preds)
    if checkpoint is None:
        return _unavailable(
            "bleurt",
            "no checkpoint given; download the PyTorch port of "
            "BLEURT-20 (huggingface.co/lucadiliello/BLEURT-20) and pass its folder",
        )
    try:
        scorer = BleurtScorer(checkpoint, device=device, batch_size=batch_size)
    except Exception as err:  # noqa: BLE001 - any load failure: the user's path is wrong
        raise UserError(
            f"cannot load the BLEURT checkpoint ({_short(err)})",
            file=str(checkpoint),
            field="bleurt_checkpoint",
            hint="a folder of the PyTorch port of BLEURT-20 (config.json, model.safetensors, spm.model)",
        ) from None
    values = scorer.score(refs, preds)
    return MetricResult(
        "bleurt", sum(values) / len(values), per_item=values, details={"checkpoint": str(checkpoint)}
    )


# ----------------------------------------------------------------------------------------- DCS

DCS_METRICS = ("rouge1", "bertscore", "bleurt")


def dcs_scores(
    refs: Sequence[str],
    preds: Sequence[str],
    bertscore_model: str | None = None,
    bleurt_checkpoint: str | Path | None = None,
    *,
    skip: Collection[str] = (),
    device: str | None = None,
) -> dict[str, Any]:
    """All three DCS metrics and the leaderboard aggregate (mean of the available ones, x100).

    ``bertscore_model`` None means the hub id bert-base-multilingual-cased (works offline only
    when it is in the local cache); ``bleurt_checkpoint`` None means BLEURT is not computed.
    Metrics named in ``skip`` are left out on purpose. Metric values are 0..1; ``aggregate`` is
    0..100 and ``aggregate_of`` names the metrics it averages; ``complete`` says whether that is
    all three, i.e. whether the number is comparable with the leaderboard.
    """
    _check_lengths(refs, preds)
    unknown = set(skip) - set(DCS_METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) to skip: {sorted(unknown)}; known: {DCS_METRICS}")
    results: dict[str, MetricResult] = {}
    if "rouge1" in skip:
        results["rouge1"] = _unavailable("rouge1", "skipped on request")
    else:
        items = rouge1_items(refs, preds)
        results["rouge1"] = MetricResult("rouge1", _official_mean(items), per_item=items)
    if "bertscore" in skip:
        results["bertscore"] = _unavailable("bertscore", "skipped on request")
    else:
        results["bertscore"] = bertscore(
            refs,
            preds,
            bertscore_model or BERTSCORE_MODEL,
            device=device,
            required=bertscore_model is not None,
        )
    if "bleurt" in skip:
        results["bleurt"] = _unavailable("bleurt", "skipped on request")
    else:
        results["bleurt"] = bleurt(refs, preds, bleurt_checkpoint, device=device)

    used = [name for name in DCS_METRICS if results[name].value is not None]
    aggregate = (sum(results[name].value * 100 for name in used) / len(used)) if used else None
    out: dict[str, Any] = {name: results[name].value for name in DCS_METRICS}
    out.update(
        {
            "aggregate": aggregate,
            "aggregate_of": used,
            "complete": len(used) == len(DCS_METRICS),
            "notices": [r.notice for r in results.values() if r.notice],
            "n": len(refs),
            "per_item": {name: results[name].per_item for name in used},
            "details": {name: results[name].details for name in used if results[name].details},
        }
    )
    return out
