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

Speed (docs/speed.md has the figures). A mask over a 150k vocabulary is llguidance's work
(Rust); what is ours is not to add to it:

- the rows that need a mask get it in one batched call (llguidance's thread pool), written into
  one bit mask kept for the whole batch, and applied in place on the logits through the words
  that hold allowed (or refused) tokens only, never a vocabulary-wide boolean tensor;
- greedy decoding asks first whether each row's top token is allowed (a few microseconds); only
  the rows whose top token is refused get a mask. The choice is the one masking first would
  make (the top allowed token is the top token when that one is allowed), as llama.cpp's
  grammar sampler does it. Where the schema forces the next bytes (a key, a separator),
  llguidance's mask allows only their canonical first token while a token-by-token check
  would accept any piece of them, so such rows are always masked;
- ``maxLength`` on a string makes llguidance's mask about 10x slower (its token-trie shortcuts
  do not apply to a bounded lexeme; with the memory schema's ``pattern`` too, about 2 ms per
  row on Qwen2's vocabulary). Under greedy decoding a row is therefore masked first by the
  schema without the length bounds (a superset: the same or more tokens allowed); if its top
  token then passes the exact schema, that is the exact choice again, and only otherwise does
  the exact mask follow;
- the per-tokenizer tables (llguidance's tokenizer, each token's bytes, the index used to close
  a document within the token budget) are built once and kept with the tokenizer.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from malpyeong.errors import UserError

log = logging.getLogger(__name__)

LIBRARY = "llguidance"
VLLM_BACKEND = "guidance"  # vLLM's name for its llguidance backend

# how many spare steps a row keeps beyond the bytes of its shortest completion before it is
# steered to close (one free token can lengthen that completion by a few bytes)
CLOSING_MARGIN = 16


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


class TokenTables:
    """What constrained decoding needs of one tokenizer, built once and kept per tokenizer
    object: llguidance's view of it (about a second to build for a 150k vocabulary), each
    token's bytes and the index from a byte string to the tokens that spell it (these two on
    first use: only the closing within the token budget reads them)."""

    def __init__(self, tokenizer: Any, ll_tokenizer: Any, vocab_size: int) -> None:
        self.tokenizer = tokenizer  # held, so that the id() in the cache key stays its own
        self.ll = ll_tokenizer
        self.n_tokens = min(vocab_size, ll_tokenizer.vocab_size)  # ids the tokenizer knows
        self._bytes: list[bytes] | None = None
        self._spelled: dict[bytes, list[int]] = {}
        self._longest = 0

    @property
    def token_bytes(self) -> list[bytes]:
        """Each token's bytes (b"" for special tokens)."""
        if self._bytes is None:
            ll = self.ll
            self._bytes = [
                b"" if ll.is_special_token(i) else ll.decode_bytes([i]) for i in range(self.n_tokens)
            ]
            for t, b in enumerate(self._bytes):
                if b:
                    self._spelled.setdefault(b, []).append(t)
            self._longest = max((len(b) for b in self._spelled), default=0)
        return self._bytes

    def spelling(self, text: bytes) -> list[int]:
        """The tokens whose bytes are a prefix of ``text``, ascending."""
        self.token_bytes  # noqa: B018 - builds the index on first use
        hits = (self._spelled.get(text[:k], ()) for k in range(1, min(len(text), self._longest) + 1))
        return sorted(t for ids in hits for t in ids)


_TABLES: dict[tuple[int, int, tuple[int, ...]], TokenTables] = {}
_EXECUTOR: list[Any] = []  # llguidance's thread pool for batched masks, one per process


def token_tables(tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> TokenTables:
    """The :class:`TokenTables` of ``tokenizer`` for logits ``vocab_size`` wide, ending at
    ``stop_ids`` (built on first use, then kept)."""
    key = (id(tokenizer), vocab_size, tuple(sorted(stop_ids)))
    hit = _TABLES.get(key)
    if hit is None or hit.tokenizer is not tokenizer:
        llguidance = _llguidance()
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(
                "constrained decoding needs a fast (Rust) tokenizer",
                field="model",
                hint="pass --no_constrain",
            )
        ll_tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=sorted(stop_ids))
        hit = _TABLES[key] = TokenTables(tokenizer, ll_tok, vocab_size)
    return hit


def _executor() -> Any:
    if not _EXECUTOR:
        _EXECUTOR.append(_llguidance().LLExecutor())
    return _EXECUTOR[0]


_PLAIN = re.compile(r'[^"\\]+')  # string characters that are neither a quote nor an escape


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
        self._tails: dict[tuple[int, int], str] = {}
        # no prefix needs more than the shortest document plus the end of one open string
        self.reach = len(self.shortest(schema).encode("utf-8")) + 8  # raises Unsupported early

    def _tail(self, schema: dict, n: int) -> str:
        """What closes an object after its property ``n``: the later properties' shortest
        values and the brace (kept per schema node and property)."""
        key = (id(schema), n)
        if key not in self._tails:
            props = list(schema["properties"].items())
            self._tails[key] = "".join(f',"{k}":{self.shortest(v)}' for k, v in props[n + 1 :]) + "}"
        return self._tails[key]

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
                tail = self._tail(schema, n)
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
            if ch != "\\":  # a run of plain characters at once
                run = _PLAIN.match(text, i).group()
                chars += len(run)
                solid = solid or not run.isspace()
                i += len(run)
                continue
            if i + 1 == len(text):
                raise ValueError("a cut escape")
            if text[i + 1] == "u":
                if i + 6 > len(text):
                    raise ValueError("a cut escape")
                i += 6
            else:
                solid = solid or text[i + 1] not in "nrtbf"
                i += 2
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
    tables: TokenTables  # the tokenizer's tables, shared by every constraint on it
    completer: Completer | None = None  # None: the schema is beyond it; no closing within budget
    relaxed_grammar: str | None = None  # the schema without maxLength (None: it has none)

    _fresh: dict = field(default_factory=dict, repr=False)  # grammar -> a matcher at its start

    def logits_processor(
        self, rows: int, prompt_width: int, max_new_tokens: int | None = None, *, greedy: bool = False
    ) -> SchemaLogitsProcessor:
        return SchemaLogitsProcessor(self, rows, prompt_width, max_new_tokens, greedy=greedy)

    def matchers(self, grammar: str, rows: int) -> list[Any]:
        """``rows`` matchers of ``grammar`` at its start: copies of one kept matcher (a copy
        costs microseconds, a new matcher milliseconds)."""
        if grammar not in self._fresh:
            self._fresh[grammar] = _llguidance().LLMatcher(self.tokenizer, grammar)
        return [self._fresh[grammar].deep_copy() for _ in range(rows)]


SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
VALUE_KEYS = ("const", "enum", "default", "examples", "x-guidance")  # data, not schemas


def without_length_bounds(schema: dict) -> dict:
    """``schema`` without any ``maxLength``: a superset whose masks llguidance computes about 10x
    faster (module docstring); ``schema`` itself when it has none, or when it negates a
    subschema (``not``, ``if``), where dropping a bound could narrow it instead."""
    found = False

    def strip(node: Any) -> Any:
        nonlocal found
        if isinstance(node, list):
            return [strip(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "maxLength":
                found = True
            elif key in ("not", "if"):
                raise Unsupported(key)
            elif key in VALUE_KEYS:
                out[key] = value
            elif key in SUBSCHEMA_MAPS and isinstance(value, dict):
                out[key] = {name: strip(sub) for name, sub in value.items()}
            else:
                out[key] = strip(value)
        return out

    try:
        relaxed = strip(schema)
    except Unsupported:
        return schema
    return relaxed if found else schema


def json_constraint(schema: dict, tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> JsonConstraint:
    """Compile ``schema`` for ``tokenizer``; a schema llguidance rejects is reported, not
    silently ignored."""
    llguidance = _llguidance()
    tables = token_tables(tokenizer, vocab_size, stop_ids)

    def compiled(schema: dict) -> tuple[str, str]:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema))
        problem = llguidance.LLMatcher.validate_grammar(grammar, tables.ll)
        return grammar, "" if problem.startswith("WARNING") else problem

    grammar, problem = compiled(schema)
    if problem:
        raise ValueError(f"the output schema does not compile: {problem}")
    relaxed = without_length_bounds(schema)
    relaxed_grammar = None
    if relaxed is not schema:
        relaxed_grammar, problem = compiled(relaxed)
        relaxed_grammar = None if problem else relaxed_grammar
    try:
        completer = Completer(schema)
    except Unsupported as err:
        log.info("constraint: no closing within the token budget (%s)", err)
        completer = None
    return JsonConstraint(
        schema,
        grammar,
        tables.ll,
        vocab_size,
        tuple(sorted(stop_ids)),
        tables,
        completer=completer,
        relaxed_grammar=relaxed_grammar,
    )


def apply_bitmask(scores: Any, bitmask: Any, rows: Sequence[int]) -> None:
    """Set to -inf, in place, the logits of ``rows`` whose bit in llguidance's ``bitmask``
    (one int32 word per 32 tokens, row ``i`` for logits row ``i``) is clear.

    On a CPU only the words that matter are unpacked: those holding an allowed token when
    few are allowed (a JSON key, a separator), else those holding a refused one (inside a
    string), so the work follows the smaller set, not the vocabulary. On a GPU the rows'
    bits are expanded there, where that is cheap.
    """
    import torch

    if scores.device.type != "cpu":
        apply_bitmask_dense(scores, bitmask, rows)
        return
    width = scores.shape[1]
    lanes = np.arange(32)
    for row in rows:
        words = bitmask[row].numpy()
        line = scores[row]
        if width > 32 * len(words):  # logits wider than the mask: nothing there is a token
            line[32 * len(words) :] = float("-inf")
        some = np.flatnonzero(words)
        if 2 * len(some) <= len(words):  # few allowed: keep those, refuse the rest
            bits = np.unpackbits(words[some].view(np.uint8), bitorder="little").reshape(-1, 32)
            ids = (some[:, None] * 32 + lanes)[bits.astype(bool)]
            ids = torch.from_numpy(ids[ids < width])
            kept = line[ids]
            line.fill_(float("-inf"))
            line[ids] = kept
        else:  # most allowed: refuse the few
            partial = np.flatnonzero(words != -1)
            bits = np.unpackbits(words[partial].view(np.uint8), bitorder="little").reshape(-1, 32)
            ids = (partial[:, None] * 32 + lanes)[~bits.astype(bool)]
            line[torch.from_numpy(ids[ids < width])] = float("-inf")


def apply_bitmask_dense(scores: Any, bitmask: Any, rows: Sequence[int]) -> None:
    """:func:`apply_bitmask` with every bit of the rows expanded on the logits' device (a GPU)."""
    import torch

    device = scores.device
    words = bitmask[list(rows)].to(device, non_blocking=True)
    bits = ((words.unsqueeze(-1) >> torch.arange(32, device=device, dtype=torch.int32)) & 1).reshape(
        len(rows), -1
    )
    refused = torch.ones((len(rows), scores.shape[1]), dtype=torch.bool, device=device)
    n = min(scores.shape[1], bits.shape[1])
    refused[:, :n] = bits[:, :n] == 0
    index = torch.tensor(list(rows), device=device)
    scores[index] = scores[index].masked_fill(refused, float("-inf"))


@dataclass
class ConstraintStats:
    """What a processor did, summed over its steps (the benchmark prints it)."""

    rows: int = 0  # row-steps constrained (rows not finished yet)
    top_allowed: int = 0  # greedy rows whose top token passed: no mask
    relaxed_masks: int = 0  # masks of the schema without length bounds
    exact_masks: int = 0  # masks of the exact schema
    closing: int = 0  # rows restricted to the spelling of their shortest completion
    mask_seconds: float = 0.0  # CPU time in llguidance's mask computation
    seconds: float = 0.0  # CPU time in the processor, all of it
    extra: dict = field(default_factory=dict)

    def add(self, other: ConstraintStats) -> None:
        for name in ("rows", "top_allowed", "relaxed_masks", "exact_masks", "closing"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.mask_seconds += other.mask_seconds
        self.seconds += other.seconds


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

    ``greedy``: the caller takes the top token of each row (``do_sample`` off, no processor
    after this one); rows whose top token is allowed are then left unmasked (module
    docstring), so their scores are not a masked distribution, only their top token is right.
    The logits are changed in place (``generate`` hands each step a fresh copy).
    """

    def __init__(
        self,
        constraint: JsonConstraint,
        rows: int,
        prompt_width: int,
        max_new_tokens: int | None = None,
        *,
        greedy: bool = False,
    ) -> None:
        import torch

        self.constraint = constraint
        self.tables = constraint.tables
        self.matchers = constraint.matchers(constraint.grammar, rows)
        self.relaxed = (
            constraint.matchers(constraint.relaxed_grammar, rows)
            if greedy and constraint.relaxed_grammar
            else None
        )
        self.greedy = greedy
        self.finished = [False] * rows
        self.text = [bytearray() for _ in range(rows)]
        self.prompt_width = prompt_width
        self.max_new_tokens = max_new_tokens if constraint.completer is not None else None
        self.stop = set(constraint.stop_ids)
        self.bitmask = torch.full((rows, (constraint.vocab_size + 31) // 32), -1, dtype=torch.int32)
        self.rejected = 0  # tokens a matcher refused (cannot happen under its own mask)
        self.closed: set[int] = set()  # rows steered to close within the budget
        self.stats = ConstraintStats()

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        start = time.process_time()
        step = input_ids.shape[1] - self.prompt_width  # tokens generated so far
        if step > 0:
            self._consume(input_ids[:, -1].tolist())
        live = [i for i, done in enumerate(self.finished) if not done]
        self.stats.rows += len(live)
        top = _top(scores) if self.greedy and live else None
        exact: list[int] = []
        relaxed: list[int] = []
        for i in live:
            # forced bytes (a key, a separator): the mask then allows only their canonical
            # first token, which a token-by-token check does not see, so such rows are masked
            forced = top is not None and bool(self.matchers[i].compute_ff_bytes())
            keep = self._closing(i, self.max_new_tokens - step, forced) if self.max_new_tokens else None
            if keep:
                _keep_only(scores, i, keep)
                self.closed.add(i)
                self.stats.closing += 1
            elif top is None or forced:
                exact.append(i)
            elif self._allows(i, top[i]):
                self.stats.top_allowed += 1
            else:
                (relaxed if self.relaxed is not None else exact).append(i)
        if relaxed:
            self._mask(scores, relaxed, self.relaxed)
            self.stats.relaxed_masks += len(relaxed)
            again = _top(scores[relaxed])
            exact += [i for i, t in zip(relaxed, again, strict=True) if not self._allows(i, t)]
        if exact:
            self._mask(scores, exact, self.matchers)
            self.stats.exact_masks += len(exact)
        self.stats.seconds += time.process_time() - start
        return scores

    def _consume(self, tokens: list[int]) -> None:
        """Each live row's last token into its matchers (and its text, for the closing)."""
        keep_text = self.max_new_tokens is not None
        for i, token in enumerate(tokens):
            if self.finished[i]:
                continue
            if token in self.stop:
                self.finished[i] = True
            elif not self.matchers[i].consume_token(token):
                self.rejected += 1
                self.finished[i] = True
                log.warning("constraint: token %d refused (%s)", token, self.matchers[i].get_error()[:200])
            else:
                if self.relaxed is not None:
                    self.relaxed[i].consume_token(token)
                if keep_text:
                    self.text[i] += self.tables.token_bytes[token]

    def _allows(self, row: int, token: int) -> bool:
        """Whether the exact schema allows ``token`` next in ``row``: its mask bit, where the
        schema forces no bytes next (the caller checks that)."""
        matcher = self.matchers[row]
        if token in self.stop:
            return matcher.is_accepting()
        return token < self.tables.n_tokens and matcher.validate_tokens([token]) == 1

    def _mask(self, scores: Any, rows: list[int], matchers: list[Any]) -> None:
        """Masks of ``rows`` (one batched llguidance call), applied in place."""
        import llguidance.torch as lt

        start = time.process_time()
        lt.fill_next_token_bitmask_par(_executor(), [(matchers[i], i) for i in rows], self.bitmask)
        self.stats.mask_seconds += time.process_time() - start
        apply_bitmask(scores, self.bitmask, rows)

    def _closing(self, row: int, steps_left: int, forced: bool) -> list[int] | None:
        """The allowed tokens that spell the row's shortest completion, when the steps left
        (the stop token included) come close to what that completion needs; else None."""
        completer = self.constraint.completer
        if steps_left > completer.reach + CLOSING_MARGIN:
            return None  # far from the end: no completion can need that many steps
        try:
            text = self.text[row].decode("utf-8")
        except UnicodeDecodeError:  # inside a character: it finishes first
            return None
        rest = completer.complete(text)
        if not rest:
            return None
        need = rest.encode("utf-8")
        if steps_left > len(need) + CLOSING_MARGIN:
            return None
        spelling = self.tables.spelling(need)
        if not spelling:
            return None
        if self.greedy and not forced:
            return [t for t in spelling if self._allows(row, t)] or None
        import llguidance.torch as lt

        start = time.process_time()
        lt.fill_next_token_bitmask(self.matchers[row], self.bitmask, row)
        self.stats.mask_seconds += time.process_time() - start
        self.stats.exact_masks += 1
        words = self.bitmask[row].tolist()
        return [t for t in spelling if (words[t >> 5] >> (t & 31)) & 1] or None


def _top(scores: Any) -> list[int]:
    """Each row's top token, the first of equal maxima, as ``generate`` picks it: numpy's
    argmax on a CPU (about 20x faster there than torch's on a 150k vocabulary)."""
    import torch

    if scores.device.type == "cpu" and scores.dtype == torch.float32:
        return scores.numpy().argmax(-1).tolist()
    return scores.argmax(-1).tolist()


def _keep_only(scores: Any, row: int, tokens: list[int]) -> None:
    import torch

    ids = torch.tensor(tokens, dtype=torch.long, device=scores.device)
    kept = scores[row, ids]
    scores[row].fill_(float("-inf"))
    scores[row, ids] = kept


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
    "ConstraintStats",
    "JsonConstraint",
    "SchemaLogitsProcessor",
    "TokenTables",
    "Unsupported",
    "apply_bitmask",
    "apply_bitmask_dense",
    "json_constraint",
    "token_tables",
    "vllm_engine_kwargs",
    "vllm_sampling_kwargs",
    "without_length_bounds",
]
