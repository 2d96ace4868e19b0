"""Constrained decoding: generations that follow a JSON schema, with llguidance.

A task that declares a JSON schema (:meth:`~malpyeong.tasks.base.Task.output_schema`) is
answered under it by default, so even an untrained model writes JSON that parses and has every
field. One library serves both engines:

- the HF engine: :class:`SchemaLogitsProcessor`, a transformers logits processor that keeps one
  llguidance matcher per row of a batch and masks, at every step, the tokens the schema does
  not allow there (a row that has ended is left alone);
- the vLLM engine: the same schema as vLLM structured outputs, served by vLLM's ``guidance``
  backend, which is llguidance (:func:`vllm_sampling_kwargs`, :func:`vllm_engine_kwargs`).

Why llguidance: it was tried against xgrammar, lm-format-enforcer and outlines on the tiny
Qwen2 on this CPU (README, "Memory state"): xgrammar works but pip installs triton (a 286 MB
CUDA compiler) with it on every Linux x86-64 machine; lm-format-enforcer 0.11 does not import
under transformers 5 and lets a weak model fill its budget with whitespace; outlines does not
enforce integer bounds and also allows free whitespace, so neither finished within budget.
llguidance is one dependency-free wheel, is one of the two backends current vLLM ships
(xgrammar and guidance), and honours the schema's ``x-guidance`` options: no free whitespace
and fixed separators, so the text has one exact layout, the one training targets are written
in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from malpyeong.errors import UserError

log = logging.getLogger(__name__)

LIBRARY = "llguidance"
VLLM_BACKEND = "guidance"  # vLLM's name for its llguidance backend

# how many spare steps a row keeps beyond the bytes of its shortest completion before it is
# steered to close (one free token can lengthen that completion by a few bytes)
CLOSING_MARGIN = 16

_TOKENIZERS: dict[tuple[int, int, tuple[int, ...]], tuple[Any, Any]] = {}


def _llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf  # noqa: F401 - the tokenizer bridge
        import llguidance.torch  # noqa: F401 - the bitmask helpers
    except ImportError as err:
        raise UserError(
            "constrained decoding needs llguidance, which is not installed",
            hint="pip install llguidance, or pass --no_constrain",
        ) from err
    return llguidance


def _ll_tokenizer(tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> Any:
    """llguidance's view of ``tokenizer`` (about a second to build for a 150k vocabulary, so
    kept per tokenizer object)."""
    key = (id(tokenizer), vocab_size, tuple(sorted(stop_ids)))
    hit = _TOKENIZERS.get(key)
    if hit is None or hit[0] is not tokenizer:
        llguidance = _llguidance()
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(
                "constrained decoding needs a fast (Rust) tokenizer",
                field="model",
                hint="pass --no_constrain",
            )
        ll_tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=sorted(stop_ids))
        hit = (tokenizer, ll_tok)
        _TOKENIZERS[key] = hit
    return hit[1]


class Unsupported(ValueError):
    """A schema feature the shortest-completion computation does not handle."""


class _Cut(Exception):  # noqa: N818 - control flow: the text ends inside a value
    def __init__(self, rest: str) -> None:
        self.rest = rest


class Completer:
    """The shortest text that completes a prefix into a document valid under the schema.

    For the schemas tasks declare here: objects whose properties are all required and written in
    order with no extra ones, arrays, strings (``minLength``; ``pattern`` only ``\\S``) and
    integers (``minimum``), in the compact layout (no whitespace, ``,`` and ``:``), which is what
    the constraint enforces. This is what lets a constrained generation always finish within its
    token budget: near the end, only tokens that spell this completion are allowed.
    """

    def __init__(self, schema: dict) -> None:
        self.schema = schema
        self._shortest: dict[int, str] = {}
        # no prefix needs more than the shortest document plus the end of one open string
        self.reach = len(self.shortest(schema).encode("utf-8")) + 8  # raises Unsupported early

    def shortest(self, schema: dict) -> str:
        """The shortest valid text of ``schema`` (kept per schema node)."""
        key = id(schema)
        if key not in self._shortest:
            self._shortest[key] = self._shortest_of(schema)
        return self._shortest[key]

    def _shortest_of(self, schema: dict) -> str:
        kind = schema.get("type")
        if kind == "object":
            props = schema.get("properties", {})
            if set(schema.get("required", [])) != set(props):
                raise Unsupported("object properties must all be required")
            return "{" + ",".join(f'"{k}":{self.shortest(v)}' for k, v in props.items()) + "}"
        if kind == "array":
            return "[" + ",".join([self.shortest(schema["items"])] * schema.get("minItems", 0)) + "]"
        if kind == "string":
            if schema.get("pattern") not in (None, "\\S"):
                raise Unsupported(f"string pattern {schema['pattern']!r}")
            need = max(schema.get("minLength", 0), 1 if schema.get("pattern") else 0)
            return '"' + "x" * need + '"'
        if kind == "integer":
            return str(max(schema.get("minimum", 0), 0))
        raise Unsupported(f"type {kind!r}")

    def complete(self, text: str) -> str | None:
        """The completion of ``text`` ("" when it is a whole document), or None when ``text``
        is not a prefix this class can complete (a partial escape, say)."""
        try:
            end = self._value(self.schema, text, 0)
        except _Cut as cut:
            return cut.rest
        except (Unsupported, ValueError, IndexError):
            return None
        return "" if end == len(text) else None

    def _literal(self, lit: str, text: str, i: int, rest: str) -> int:
        part = text[i : i + len(lit)]
        if not lit.startswith(part):
            raise ValueError("not the layout")
        if len(part) < len(lit):
            raise _Cut(lit[len(part) :] + rest)
        return i + len(lit)

    def _value(self, schema: dict, text: str, i: int) -> int:
        if i == len(text):
            raise _Cut(self.shortest(schema))
        kind = schema["type"]
        if kind == "object":
            props = list(schema["properties"].items())
            i = self._literal("{", text, i, "")
            for n, (key, sub) in enumerate(props):
                tail = "".join(f',"{k}":{self.shortest(v)}' for k, v in props[n + 1 :]) + "}"
                i = self._literal(("," if n else "") + f'"{key}":', text, i, self.shortest(sub) + tail)
                try:
                    i = self._value(sub, text, i)
                except _Cut as cut:
                    raise _Cut(cut.rest + tail) from None
            return self._literal("}", text, i, "")
        if kind == "array":
            i = self._literal("[", text, i, "")
            count = 0
            while True:
                if i == len(text):
                    missing = max(schema.get("minItems", 0) - count, 0)
                    item = self.shortest(schema["items"])
                    raise _Cut(("," if count and missing else "") + ",".join([item] * missing) + "]")
                if text[i] == "]":
                    return i + 1
                if count:
                    i = self._literal(",", text, i, self.shortest(schema["items"]) + "]")
                try:
                    i = self._value(schema["items"], text, i)
                except _Cut as cut:
                    raise _Cut(cut.rest + "]") from None
                count += 1
        if kind == "string":
            return self._string(schema, text, i)
        if kind == "integer":
            j = i + (text[i] == "-")
            while j < len(text) and text[j].isdigit():
                j += 1
            if j == len(text):  # the number may go on; as it is, it must be within bounds
                digits = text[i:j]
                if digits in ("", "-") or int(digits) < schema.get("minimum", int(digits)):
                    raise ValueError("an integer cannot end here")
            return j
        raise Unsupported(f"type {kind!r}")

    def _string(self, schema: dict, text: str, i: int) -> int:
        i = self._literal('"', text, i, self.shortest(schema)[1:])
        chars, solid = 0, False
        while i < len(text):
            ch = text[i]
            if ch == '"':
                return i + 1
            if ch == "\\":
                if i + 1 == len(text):
                    raise ValueError("a cut escape")
                if text[i + 1] == "u":
                    if i + 6 > len(text):
                        raise ValueError("a cut escape")
                    i += 6
                else:
                    solid = solid or text[i + 1] not in "nrtbf"
                    i += 2
            else:
                solid = solid or not ch.isspace()
                i += 1
            chars += 1
        need = max(schema.get("minLength", 0) - chars, 0)
        if schema.get("pattern") and not solid:
            need = max(need, 1)
        raise _Cut("x" * need + '"')


@dataclass
class JsonConstraint:
    """A JSON schema compiled for one tokenizer: what a batch's logits processor is made from."""

    schema: dict
    grammar: str  # llguidance's grammar of the schema
    tokenizer: Any  # llguidance.LLTokenizer
    vocab_size: int  # width of the model's logits
    stop_ids: tuple[int, ...]  # tokens that end a generation (allowed once the JSON is complete)
    completer: Completer | None = None  # None: the schema is beyond it; no closing within budget
    token_bytes: list[bytes] | None = None  # each token's bytes (b"" for special tokens)

    def logits_processor(
        self, rows: int, prompt_width: int, max_new_tokens: int | None = None
    ) -> SchemaLogitsProcessor:
        return SchemaLogitsProcessor(self, rows, prompt_width, max_new_tokens)


def json_constraint(schema: dict, tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> JsonConstraint:
    """Compile ``schema`` for ``tokenizer``; a schema llguidance rejects is reported, not
    silently ignored."""
    llguidance = _llguidance()
    ll_tok = _ll_tokenizer(tokenizer, vocab_size, stop_ids)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema))
    problem = llguidance.LLMatcher.validate_grammar(grammar, ll_tok)
    if problem and not problem.startswith("WARNING"):
        raise ValueError(f"the output schema does not compile: {problem}")
    try:
        completer = Completer(schema)
    except Unsupported as err:
        log.info("constraint: no closing within the token budget (%s)", err)
        completer = None
    token_bytes = (
        [
            b"" if ll_tok.is_special_token(i) else ll_tok.decode_bytes([i])
            for i in range(min(vocab_size, ll_tok.vocab_size))
        ]
        if completer
        else None
    )
    return JsonConstraint(
        schema, grammar, ll_tok, vocab_size, tuple(sorted(stop_ids)), completer, token_bytes
    )


class SchemaLogitsProcessor:
    """A transformers ``LogitsProcessor`` for one batch of ``generate``: row ``i`` may only
    continue with tokens that keep its text a prefix of a schema-valid JSON document, and may
    stop only once the document is complete.

    ``prompt_width``: the (left-padded) prompt length, so the first call sees no generated
    token. A row that produced a stop token is finished: transformers pads it from then on,
    and its later logits are not masked. With ``max_new_tokens`` (and a schema the
    :class:`Completer` handles), a row that is running out of tokens is steered to close: once
    the steps left come within :data:`CLOSING_MARGIN` of the bytes its shortest completion
    needs, only tokens that spell that completion stay allowed, so the document always ends
    within the budget (counted in ``closed``).
    """

    def __init__(
        self, constraint: JsonConstraint, rows: int, prompt_width: int, max_new_tokens: int | None = None
    ) -> None:
        import torch

        llguidance = _llguidance()
        self.constraint = constraint
        self.matchers = [llguidance.LLMatcher(constraint.tokenizer, constraint.grammar) for _ in range(rows)]
        self.finished = [False] * rows
        self.text = [bytearray() for _ in range(rows)]
        self.prompt_width = prompt_width
        self.max_new_tokens = max_new_tokens if constraint.completer is not None else None
        self.stop = set(constraint.stop_ids)
        self.shifts = torch.arange(32, dtype=torch.int32)
        self.rejected = 0  # tokens a matcher refused (cannot happen under its own mask)
        self.closed: set[int] = set()  # rows steered to close within the budget
        self._first: dict[int, list[int]] | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import llguidance.torch as lt
        import torch

        step = input_ids.shape[1] - self.prompt_width  # tokens generated so far
        if step > 0:
            for i, token in enumerate(input_ids[:, -1].tolist()):
                if self.finished[i]:
                    continue
                if token in self.stop:
                    self.finished[i] = True
                elif not self.matchers[i].consume_token(token):
                    self.rejected += 1
                    self.finished[i] = True
                    log.warning(
                        "constraint: token %d refused (%s)", token, self.matchers[i].get_error()[:200]
                    )
                elif self.constraint.token_bytes is not None:
                    self.text[i] += self.constraint.token_bytes[token]
        mask = lt.allocate_token_bitmask(len(self.matchers), self.constraint.vocab_size)
        for i, matcher in enumerate(self.matchers):
            if not self.finished[i]:
                lt.fill_next_token_bitmask(matcher, mask, i)
        allowed = ((mask.unsqueeze(-1) >> self.shifts) & 1).bool()
        allowed = allowed.reshape(mask.shape[0], -1)[:, : scores.shape[1]]
        if allowed.shape[1] < scores.shape[1]:  # logits wider than the tokenizer's vocabulary
            pad = allowed.new_zeros((allowed.shape[0], scores.shape[1] - allowed.shape[1]))
            allowed = torch.cat([allowed, pad], dim=1)
        if self.max_new_tokens is not None:
            for i in range(len(self.matchers)):
                if not self.finished[i]:
                    self._close_in_time(i, self.max_new_tokens - step, allowed)
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))

    def _close_in_time(self, row: int, steps_left: int, allowed: Any) -> None:
        """Keep only the tokens that spell the row's shortest completion when the steps left
        (the stop token included) come close to what that completion needs."""
        if steps_left > self.constraint.completer.reach + CLOSING_MARGIN:
            return  # far from the end: no completion can need that many steps
        try:
            text = self.text[row].decode("utf-8")
        except UnicodeDecodeError:  # inside a character: it finishes first
            return
        rest = self.constraint.completer.complete(text)
        if rest is None or not rest:
            return
        need = rest.encode("utf-8")
        if steps_left > len(need) + CLOSING_MARGIN:
            return
        import torch

        spelling = torch.tensor(
            [
                t
                for t in self._by_first_byte().get(need[0], ())
                if need.startswith(self.constraint.token_bytes[t])
            ],
            dtype=torch.long,
        )
        spelling = spelling[allowed[row, spelling]] if spelling.numel() else spelling
        if not spelling.numel():
            return
        keep = allowed.new_zeros(allowed.shape[1])
        keep[spelling] = True
        allowed[row] &= keep
        self.closed.add(row)

    def _by_first_byte(self) -> dict[int, list[int]]:
        if self._first is None:
            first: dict[int, list[int]] = {}
            for t, b in enumerate(self.constraint.token_bytes or []):
                if b:
                    first.setdefault(b[0], []).append(t)
            self._first = first
        return self._first


def vllm_sampling_kwargs(schema: dict) -> dict:
    """What ``vllm.SamplingParams`` takes to constrain a request to ``schema``: structured
    outputs (vLLM >= 0.11), or guided decoding with the guidance backend (earlier)."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema, backend=VLLM_BACKEND)}
    return {"structured_outputs": StructuredOutputsParams(json=schema)}


def vllm_engine_kwargs(llm_class: Any) -> dict:
    """What ``vllm.LLM(...)`` takes so its structured outputs use llguidance (vLLM >= 0.11 sets
    the backend per engine; earlier versions per request, see :func:`vllm_sampling_kwargs`)."""
    import inspect

    if "structured_outputs_config" in inspect.signature(llm_class.__init__).parameters:
        return {"structured_outputs_config": {"backend": VLLM_BACKEND}}
    return {}


__all__ = [
    "CLOSING_MARGIN",
    "LIBRARY",
    "Completer",
    "JsonConstraint",
    "SchemaLogitsProcessor",
    "Unsupported",
    "json_constraint",
    "vllm_engine_kwargs",
    "vllm_sampling_kwargs",
]
