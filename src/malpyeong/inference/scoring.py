"""Option scoring for choice tasks: the probability a model gives each option of an item.

Scorings:

- ``letter`` (default): one forward pass per prompt; the next-token logits of the option letters
  at the answer position, softmaxed over the letters. The letter ids are the first token of an
  answer as training tokenizes it after the generation prompt (``A`` or ``▁A``), checked distinct.
- ``loglik`` / ``loglik_norm``: the log-likelihood of each option's text after the prompt and the
  chat template's answer prefix (summed, or divided by the option's length in characters, as
  lm-evaluation-harness's acc /
  acc_norm); softmax over the three.
- ``permute``: each item is also scored with its options in the two other cyclic orders, and the
  three probability vectors, mapped back to the original order, are averaged (cancels a model's
  preference for a position).

Speed: every prompt of a run is a token sequence, and many share their first tokens. The part
common to all (system prompt, headers) is run once; sequences sorted by their tokens form groups
that share more (the items of one conversation, the option orders of --permute, the three
options of one item) whose prefix is run once per batch, its key-value cache copied to each
member, so only the differing tails are computed (on the real CCI test file: 2.6x fewer tokens
than one pass per item, 4.7x with --permute). Batches are cut by length with right padding:
causal attention never lets a real token see the padding to its right, so positions are the
unpadded ones and a row's result does not depend on what it is batched with. Only the logits
that are needed are projected onto the vocabulary.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from malpyeong.cli import progress_bar
from malpyeong.device import model_device
from malpyeong.errors import UserError
from malpyeong.inference.generation import cache_keyword
from malpyeong.inference.shard import ALONE, Shard
from malpyeong.models.backbones import Backbone, answer_ids, answer_prefix, encode
from malpyeong.models.budget import FittedPrompt, fit_prompt
from malpyeong.tasks.base import ChoiceTask, PromptSpec

log = logging.getLogger(__name__)

SCORINGS = ("letter", "loglik", "loglik_norm")
MIN_SHARED_PREFIX = 16  # tokens: below this a shared prefix is not worth a separate pass

# ------------------------------------------------------------------------------ letter tokens


def letter_token_ids(tokenizer: Any, prompt_text: str, letters: Sequence[str]) -> list[int]:
    """The token id of each letter as training teaches it right after ``prompt_text``.

    Training appends an answer's tokens to the prompt's, the answer (``A. …``) tokenized on its
    own after the chat template's answer prefix (:func:`~malpyeong.models.backbones.answer_ids`), so the
    letter's id is the first of those: ``A`` for byte-level BPEs, ``▁A`` for SentencePiece ones
    (Mistral v3 after ``[/INST]``, SOLAR after ``### Assistant:\n``), where ``prompt_text + "A"``
    would encode ``A`` without the prefix and miss what the model was trained to write. The ids
    do not depend on ``prompt_text``. Raises when two letters share an id (the softmax over
    them would be meaningless).
    """
    prefix = answer_prefix(tokenizer)
    ids = []
    for letter in letters:
        first = answer_ids(tokenizer, letter, prefix)[:1]
        if not first:
            raise UserError(f"the tokenizer has no token for option letter '{letter}'", field="model")
        ids.append(first[0])
    if len(set(ids)) != len(ids):
        shown = ", ".join(
            f"{a}={tokenizer.convert_ids_to_tokens(i)!r}" for a, i in zip(letters, ids, strict=True)
        )
        raise UserError(
            f"option letters share a token ({shown})",
            field="model",
            hint="use --scoring loglik for this tokenizer",
        )
    return ids


# ------------------------------------------------------------------------------ prefix-sharing runner


@dataclass
class TokenSequence:
    """A token sequence and the positions whose next-token logits are needed."""

    ids: list[int]
    need: list[int]  # sorted positions t: logits at t predict token t+1


@dataclass
class Unit:
    """One batch of ``members`` (sequence indices) in up to three levels of shared prefixes.

    Every sequence of a plan starts with the plan's root prefix (``Plan.root`` tokens, run
    once). ``groups[g] = (source, length)``: ``seqs[source].ids[root:length]`` is run once per
    batch for the members ``m`` with ``group_of[m] == g``; each member then runs only its tail
    from ``length``. A plan without sharing has root 0 and one group per member of length 0.
    """

    members: list[int]
    groups: list[tuple[int, int]] = field(default_factory=list)
    group_of: list[int] = field(default_factory=list)


@dataclass
class Plan:
    root: int  # tokens every sequence shares (0: none)
    units: list[Unit]


def _lcp(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _cap(seq: TokenSequence) -> int:
    """A prefix may not reach a position whose logits are needed."""
    return seq.need[0] if seq.need else len(seq.ids)


def prefix_groups(
    seqs: Sequence[TokenSequence], root: int = 0, *, min_prefix: int = MIN_SHARED_PREFIX
) -> list[tuple[int, list[int]]]:
    """``(prefix length, members)`` groups of sequences that share tokens beyond the root.

    Sequences are sorted by their tokens, so shared prefixes sit next to each other; a sequence
    joins the open group when that saves tokens (the group's prefix may shrink to the common
    part; what lies within the root is computed once anyway and does not count).
    """
    order = sorted(range(len(seqs)), key=lambda i: seqs[i].ids)
    groups: list[tuple[int, list[int]]] = []
    cur: list[int] = []
    cur_prefix = 0
    for i in order:
        cap = _cap(seqs[i])
        if cur:
            shared = min(cur_prefix, cap, _lcp(seqs[cur[0]].ids, seqs[i].ids, cur_prefix))
            extra, kept = cur_prefix - root, shared - root
            saving = extra - len(cur) * (extra - kept)  # tokens not recomputed by joining
            if kept >= min_prefix and saving >= min_prefix:
                cur.append(i)
                cur_prefix = shared
                continue
            groups.append((cur_prefix if len(cur) > 1 else root, cur))
        cur, cur_prefix = [i], cap
    if cur:
        groups.append((cur_prefix if len(cur) > 1 else root, cur))
    return groups


def plan_units(
    seqs: Sequence[TokenSequence], batch_size: int, *, share: bool = True, min_prefix: int = MIN_SHARED_PREFIX
) -> Plan:
    """Cut the work into batches of at most ``batch_size`` sequences.

    With ``share``: the prefix common to all sequences (system prompt, headers) is the root;
    groups that share more (the items of one conversation, the options of one item) are packed
    into batches by prefix length, several groups per batch; sequences that share nothing more
    are batched by length, longest first. The plan depends on the sequences and
    ``batch_size`` only, so a resumed run recomputes exactly the batches of the first run.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    root = 0
    if share and seqs:
        root = min(_cap(s) for s in seqs)
        first = seqs[0].ids
        for s in seqs[1:]:
            root = _lcp(first, s.ids, root)
        if root < min_prefix or len(seqs) < 2:
            root = 0
    groups = (
        prefix_groups(seqs, root, min_prefix=min_prefix) if share else [(0, [i]) for i in range(len(seqs))]
    )
    shared: list[tuple[int, list[int]]] = []
    singles: list[int] = []
    for prefix, members in groups:
        if len(members) < 2:
            singles.extend(members)
            continue
        members = sorted(members, key=lambda i: (-len(seqs[i].ids), i))
        for lo in range(0, len(members), batch_size):
            shared.append((prefix, members[lo : lo + batch_size]))
    shared.sort(key=lambda g: (-g[0], min(g[1])))
    units: list[Unit] = []
    cur = Unit([])
    for prefix, members in shared:
        if len(cur.members) + len(members) > batch_size:
            units.append(cur)
            cur = Unit([])
        cur.groups.append((members[0], prefix))
        cur.group_of.extend([len(cur.groups) - 1] * len(members))
        cur.members.extend(members)
    if cur.members:
        units.append(cur)
    singles.sort(key=lambda i: (-len(seqs[i].ids), i))
    for lo in range(0, len(singles), batch_size):
        batch = singles[lo : lo + batch_size]
        units.append(Unit(batch, [(i, root) for i in batch], list(range(len(batch)))))
    return Plan(root, units)


# Hybrid attention / state-space models: their cache is not a key-value cache to copy.
HYBRID_MODEL_TYPES = frozenset(
    {"jamba", "zamba", "zamba2", "bamba", "falcon_h1", "nemotron_h", "granitemoehybrid", "lfm2"}
)


def can_share_prefix(model: Any, max_tokens: int) -> bool:
    """Prefix caches are reused only where a plain growing cache is exact.

    Sliding-window layers (Gemma-2, Mistral) keep only the last window of keys, so a copied
    prefix cache would be cut; sharing is used there only when no sequence is longer than
    the window. A model without attention (Mamba: a recurrent state, no keys and values) or a
    hybrid one never shares: each sequence runs whole.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "forward"):
        return False
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    if (
        getattr(config, "num_attention_heads", None) is None
        or getattr(config, "model_type", None) in HYBRID_MODEL_TYPES
    ):
        return False
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None) or []
    sliding = window is not None and (
        not types or "sliding_attention" in types or getattr(config, "use_sliding_window", True) is True
    )
    if sliding and window and max_tokens >= int(window):
        return False
    return True


def _logits_rows(model: Any, input_ids: Any, keep: Any, **kwargs: Any) -> Any:
    """Logits at the True positions of ``keep`` (flattened, row-major), as float32."""
    try:
        out = model(input_ids=input_ids, logits_to_keep=keep, **kwargs)
        logits = out.logits
        if logits.dim() == 2 and logits.shape[0] == int(keep.sum()):
            return logits.float()
    except TypeError:  # a model class without logits_to_keep
        out = model(input_ids=input_ids, **kwargs)
        logits = out.logits
    return logits[keep].float()


def _right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> Any:
    import torch

    ids = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(list(row), dtype=torch.long)
    return ids


def _member_mask(model: Any, starts: Sequence[int], prefix: int, tail: int) -> Any:
    """What each member's tail may attend to: its own prefix (``starts[r]`` tokens of the
    ``prefix`` cache slots) and, causally, its own tail.

    Built here as a 4D mask (batch, 1, tail, prefix + tail), which transformers passes to the
    attention as it is, for sdpa (boolean) and eager (additive) attention; other
    implementations get the 2D padding mask and build the causal part themselves.
    """
    import torch

    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    k = torch.arange(prefix + tail)
    if impl not in ("sdpa", "eager"):
        return (k[None, :] < torch.tensor(starts)[:, None]) | (k[None, :] >= prefix)
    q = torch.arange(tail)
    own_prefix = k[None, None, :] < torch.tensor(starts)[:, None, None]  # (B, 1, K)
    causal_tail = (k[None, :] >= prefix) & (k[None, :] - prefix <= q[:, None])  # (Q, K)
    allowed = (own_prefix | causal_tail[None]).unsqueeze(1)  # (B, 1, Q, K)
    if impl == "sdpa":
        return allowed
    dtype = next(model.parameters()).dtype
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def run_units(
    model: Any,
    seqs: Sequence[TokenSequence],
    plan: Plan,
    reduce: Callable[[int, Any], Any],
    *,
    pad_id: int = 0,
    skip: Callable[[int], bool] | None = None,
    on_done: Callable[[list[int]], None] | None = None,
    units: Collection[int] | None = None,
) -> None:
    """Run the planned batches; ``reduce(seq_index, logits[len(need), V])`` per sequence.

    Right padding throughout, so no real token ever sees padding through causal attention. In
    a sharing batch the root cache is copied once per group, the groups' prefixes are run as
    one right-padded batch, the cache rows are gathered per member, and each member's tail
    attends to its own prefix only (the padding between is masked out) at positions that
    continue it. A unit whose members all satisfy ``skip`` is not run (resume); with
    ``units``, only those unit indices are run (this process's shard).
    """
    import torch
    from transformers import DynamicCache

    device = model_device(model)
    kv = cache_keyword(model)
    root = plan.root
    root_cache = None
    for u, unit in enumerate(plan.units):
        if units is not None and u not in units:
            continue
        if skip is not None and all(skip(i) for i in unit.members):
            continue
        rows = [seqs[i] for i in unit.members]
        starts = [unit.groups[g][1] for g in unit.group_of] if unit.groups else [0] * len(rows)
        tails = [s.ids[p:] for s, p in zip(rows, starts, strict=True)]
        ids = _right_pad(tails, pad_id)
        keep = torch.zeros(ids.shape, dtype=torch.bool)
        for r, (s, p) in enumerate(zip(rows, starts, strict=True)):
            keep[r, [t - p for t in s.need]] = True
        with torch.inference_mode():
            if not any(starts):  # nothing shared: plain batch, no cache
                logits = _logits_rows(model, ids.to(device), keep.to(device), use_cache=False)
            else:
                if root and root_cache is None:
                    root_cache = DynamicCache()
                    model(
                        input_ids=torch.tensor([seqs[unit.members[0]].ids[:root]], device=device),
                        **{kv: root_cache},
                        use_cache=True,
                        logits_to_keep=1,
                    )
                cache = DynamicCache()
                if root:
                    cache = copy.deepcopy(root_cache)
                    cache.batch_repeat_interleave(len(unit.groups))
                heads = [seqs[src].ids[root:p] for src, p in unit.groups]
                width = max(len(h) for h in heads)
                if width:
                    model(
                        input_ids=_right_pad(heads, pad_id).to(device),
                        attention_mask=torch.ones(
                            (len(heads), root + width), dtype=torch.long, device=device
                        ),
                        position_ids=(root + torch.arange(width))[None].expand(len(heads), -1).to(device),
                        **{kv: cache},
                        use_cache=True,
                        logits_to_keep=1,
                    )
                cache.batch_select_indices(torch.tensor(unit.group_of, device=device))
                mask = _member_mask(model, starts, root + width, ids.shape[1])
                positions = torch.tensor(starts)[:, None] + torch.arange(ids.shape[1])[None, :]
                logits = _logits_rows(
                    model,
                    ids.to(device),
                    keep.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    **{kv: cache},
                    use_cache=True,
                )
                del cache
        at = 0
        for i, s in zip(unit.members, rows, strict=True):
            reduce(i, logits[at : at + len(s.need)])
            at += len(s.need)
        if on_done is not None:
            on_done(unit.members)


# ------------------------------------------------------------------------------ choice scoring


def cyclic_orders(n: int) -> list[tuple[int, ...]]:
    """The n cyclic rotations of the options; the first is the original order."""
    return [tuple((k + j) % n for j in range(n)) for k in range(n)]


def unpermute(probs: Sequence[float], order: Sequence[int]) -> np.ndarray:
    """Probabilities over shown positions -> over original options (position j showed order[j])."""
    out = np.zeros(len(order), dtype=np.float64)
    for j, original in enumerate(order):
        out[original] = probs[j]
    return out


def softmax(x: Sequence[float]) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    a = a - a.max()
    e = np.exp(a)
    return e / e.sum()


@dataclass
class ChoicePrompts:
    """Every prompt of a choice-scoring run: ``fitted[item][k]`` shows the options in ``orders[k]``."""

    orders: list[tuple[int, ...]]
    fitted: list[list[FittedPrompt]]

    @property
    def dropped(self) -> list[int]:
        return [max(f.dropped for f in per) for per in self.fitted]

    @property
    def over_budget(self) -> int:
        return sum(not all(f.fits for f in per) for per in self.fitted)


def fit_choice_prompts(
    task: ChoiceTask,
    items: Sequence[Any],
    tokenizer: Any,
    backbone: Backbone,
    spec: PromptSpec,
    *,
    max_length: int | None = None,
    permute: bool = False,
    reserve: int = 0,
) -> ChoicePrompts:
    """Fit (length budget) every item's prompt, in each option order that will be scored."""
    orders = cyclic_orders(task.n_choices) if permute else [tuple(range(task.n_choices))]
    fitted = []
    for item in items:
        fitted.append(
            [
                fit_prompt(
                    task,
                    item if o == orders[0] else task.permuted(item, o),
                    tokenizer,
                    backbone,
                    spec,
                    max_length,
                    reserve=reserve,
                )
                for o in orders
            ]
        )
    return ChoicePrompts(orders, fitted)


@dataclass
class ItemScore:
    probs: np.ndarray
    extra: dict = field(default_factory=dict)


def _option_sequences(
    tokenizer: Any, fitted: FittedPrompt, options: Sequence[str], prefix: str = ""
) -> list[TokenSequence]:
    """prompt + option text per option (after the template's answer ``prefix``, so a Mistral v3
    option reads ``[/INST] ▁text`` as the model writes answers); the logits needed are those that
    predict the option."""
    base = fitted.input_ids
    out = []
    for text in options:
        full = encode(tokenizer, fitted.text + prefix + text)
        if not (len(full) > len(base) and full[: len(base)] == base):
            full = list(base) + answer_ids(tokenizer, text, prefix)
        out.append(TokenSequence(full, list(range(len(base) - 1, len(full) - 1))))
    return out


def score_items(
    model: Any,
    tokenizer: Any,
    task: ChoiceTask,
    items: Sequence[Any],
    prompts: ChoicePrompts,
    *,
    scoring: str = "letter",
    batch_size: int = 16,
    share_prefix: bool | None = None,
    progress: bool = True,
    done: Collection[int] = (),
    on_item: Callable[[int, ItemScore], None] | None = None,
    shard: Shard = ALONE,
) -> list[ItemScore | None]:
    """Score prepared prompts; ``done`` item indices are skipped (their entries stay None).
    Under ``shard`` only this process's batches are run (see :mod:`malpyeong.inference.shard`)."""
    import torch

    if scoring not in SCORINGS:
        raise UserError(f"unknown scoring '{scoring}'", field="scoring", hint=", ".join(SCORINGS))
    n_choices = task.n_choices
    seqs: list[TokenSequence] = []
    owner: list[tuple[int, int, int]] = []  # (item, order index, option position or -1)
    letter_ids: list[int] | None = None
    prefix = answer_prefix(tokenizer) if scoring != "letter" else ""
    for i, (item, per) in enumerate(zip(items, prompts.fitted, strict=True)):
        for k, (order, fp) in enumerate(zip(prompts.orders, per, strict=True)):
            if scoring == "letter":
                if letter_ids is None:
                    letter_ids = letter_token_ids(tokenizer, fp.text, task.letters)
                seqs.append(TokenSequence(list(fp.input_ids), [len(fp.input_ids) - 1]))
                owner.append((i, k, -1))
            else:
                shown = [task.choices(item)[o] for o in order]
                for j, s in enumerate(_option_sequences(tokenizer, fp, shown, prefix)):
                    seqs.append(s)
                    owner.append((i, k, j))
    done_set = set(done)
    if share_prefix is None:
        share_prefix = can_share_prefix(model, max((len(s.ids) for s in seqs), default=0))
    plan = plan_units(seqs, batch_size, share=share_prefix)
    units = shard.batches([sorted({owner[s][0] for s in u.members}) for u in plan.units])
    mine = {owner[s][0] for u in units for s in plan.units[u].members}
    seqs_of_item: list[int] = [0] * len(items)
    for i, _, _ in owner:
        seqs_of_item[i] += 1
    remaining = list(seqs_of_item)
    partial: list[dict] = [{} for _ in items]
    results: list[ItemScore | None] = [None] * len(items)
    letter_t = torch.tensor(letter_ids) if letter_ids is not None else None

    def reduce(s: int, logits: Any) -> None:
        i, k, j = owner[s]
        if scoring == "letter":
            row = logits[0, letter_t.to(logits.device)].double().cpu().numpy()
            partial[i][(k, -1)] = row
        else:
            targets = torch.tensor(seqs[s].ids[seqs[s].need[0] + 1 :], device=logits.device)
            logp = torch.log_softmax(logits.double(), dim=-1).gather(1, targets[:, None]).sum()
            partial[i][(k, j)] = float(logp)
        remaining[i] -= 1
        if remaining[i] == 0 and i not in done_set:  # a resumed batch also recomputes done items
            results[i] = _finish(task, items[i], prompts.orders, partial[i], scoring, n_choices)
            if on_item is not None:
                on_item(i, results[i])
            bar.update(1)
        if remaining[i] == 0:
            partial[i] = {}

    bar = progress_bar(len(mine), progress, f"score ({scoring})", initial=len(done_set & mine))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if getattr(model, "training", False):
        model.eval()
    try:
        run_units(model, seqs, plan, reduce, pad_id=pad, skip=lambda s: owner[s][0] in done_set, units=units)
    finally:
        bar.close()
    return results


def _finish(
    task: ChoiceTask, item: Any, orders: list[tuple[int, ...]], parts: dict, scoring: str, n: int
) -> ItemScore:
    """Combine an item's per-order scores into probabilities over its original options."""
    probs = np.zeros(n, dtype=np.float64)
    if scoring == "letter":
        for k, order in enumerate(orders):
            probs += unpermute(softmax(parts[(k, -1)]), order)
        return ItemScore(probs / len(orders))
    lengths = [max(len(t), 1) for t in task.choices(item)]
    sums = np.zeros(n, dtype=np.float64)
    for k, order in enumerate(orders):
        shown = np.array([parts[(k, j)] for j in range(n)])
        norm = shown / np.array([lengths[o] for o in order])
        probs += unpermute(softmax(norm if scoring == "loglik_norm" else shown), order)
        sums += unpermute(shown, order)
    sums /= len(orders)
    norms = sums / np.array(lengths)
    return ItemScore(
        probs / len(orders), {"loglik": [float(x) for x in sums], "loglik_norm": [float(x) for x in norms]}
    )


def score_choices(
    model: Any,
    tokenizer: Any,
    backbone: Backbone,
    task: ChoiceTask,
    items: Sequence[Any],
    *,
    spec: PromptSpec | None = None,
    batch_size: int = 16,
    max_length: int | None = None,
    scoring: str = "letter",
    permute: bool = False,
    progress: bool = True,
    on_result: Callable[[int, np.ndarray], None] | None = None,
    prompts: ChoicePrompts | None = None,
) -> np.ndarray:
    """Probabilities over each item's options (original order), shape ``(n, n_choices)``.

    ``on_result(index, probs)`` is called as each item is finished (in completion order).
    Every prompt goes through the length budget (``max_length``); pass ``prompts`` (from
    :func:`fit_choice_prompts`) to reuse prompts fitted already.
    """
    if scoring not in SCORINGS:
        raise UserError(f"unknown scoring '{scoring}'", field="scoring", hint=", ".join(SCORINGS))
    if prompts is None:
        prompts = fit_choice_prompts(
            task,
            items,
            tokenizer,
            backbone,
            spec or task.prompt_spec(None),
            max_length=max_length,
            permute=permute,
            reserve=option_reserve(tokenizer, task, items, scoring),
        )
    cut = sum(d > 0 for d in prompts.dropped)
    if cut:
        log.info("%d of %d prompts cut to fit max_length %s", cut, len(items), max_length)
    results = score_items(
        model,
        tokenizer,
        task,
        items,
        prompts,
        scoring=scoring,
        batch_size=batch_size,
        progress=progress,
        on_item=(lambda i, r: on_result(i, r.probs)) if on_result else None,
    )
    return np.stack([r.probs for r in results]) if results else np.zeros((0, task.n_choices))


def sequence_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    share_prefix: bool | None = None,
    done: Collection[int] = (),
) -> list[float | None]:
    """The summed log-probability of each completion right after its prompt (token ids).

    Runs through the same batches as option scoring (:func:`plan_units` / :func:`run_units`),
    so a value does not depend on what it is batched with, and a resumed run, which skips only
    batches whose members are all ``done``, reproduces the others exactly. ``done`` entries
    come back as None.
    """
    import torch

    seqs = [
        TokenSequence(list(p) + list(c), list(range(len(p) - 1, len(p) + len(c) - 1)))
        for p, c in zip(prompts, completions, strict=True)
    ]
    if any(not c for c in completions) or any(not p for p in prompts):
        raise ValueError("every prompt and completion needs at least one token")
    if share_prefix is None:
        share_prefix = can_share_prefix(model, max((len(s.ids) for s in seqs), default=0))
    plan = plan_units(seqs, batch_size, share=share_prefix)
    done_set = set(done)
    out: list[float | None] = [None] * len(seqs)

    def reduce(s: int, logits: Any) -> None:
        if s in done_set:
            return
        targets = torch.tensor(seqs[s].ids[seqs[s].need[0] + 1 :], device=logits.device)
        logp = torch.log_softmax(logits.double(), dim=-1).gather(1, targets[:, None]).sum()
        out[s] = float(logp)

    if getattr(model, "training", False):
        model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    run_units(model, seqs, plan, reduce, pad_id=pad, skip=lambda s: s in done_set)
    return out


def option_reserve(tokenizer: Any, task: ChoiceTask, items: Sequence[Any], scoring: str) -> int:
    """Room kept after the prompt: the longest option's tokens for loglik, else none."""
    if scoring == "letter":
        return 0
    longest = max(
        (len(tokenizer.encode(t, add_special_tokens=False)) for it in items for t in task.choices(it)),
        default=0,
    )
    return longest


__all__ = [
    "SCORINGS",
    "ChoicePrompts",
    "ItemScore",
    "TokenSequence",
    "can_share_prefix",
    "cyclic_orders",
    "fit_choice_prompts",
    "letter_token_ids",
    "option_reserve",
    "plan_units",
    "run_units",
    "score_choices",
    "score_items",
    "sequence_logprobs",
    "softmax",
    "unpermute",
]
