"""Load a model for inference from whatever the user points at.

Four kinds of source, told apart by the files in the folder:

- a training run folder (``malpyeong_run.json``): its merged model when it has one (fastest at
  inference), else its LoRA adapter on the base named in the run file; the run's prompt and
  max_length become the defaults of ``run/test.py``;
- a LoRA adapter folder (``adapter_config.json``): the base named in the adapter config, with
  the adapter attached and, unless the base is 4-bit, merged in;
- a local model folder (``config.json``), or a hub id: loaded as it is.

A trainer checkpoint inside a run folder (``runs/x/checkpoint-500``) is an adapter or model
folder that also takes its run's prompt, max_length and task, as the finished run would.

The chat format comes from the base model's backbone entry (an adapter or merged copy of
``rtzr/ko-gemma-2-9b-it`` is still a Gemma-2 chat model).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from malpyeong.device import cuda_available, device_map
from malpyeong.errors import UserError, one_line
from malpyeong.inference.classifier import ClassifierEngine, is_classifier_run
from malpyeong.inference.constrain import vllm_engine_kwargs
from malpyeong.inference.engines import ENGINES, Engine, HFEngine, VLLMEngine
from malpyeong.models.backbones import (
    REGISTRY,
    Backbone,
    get_backbone,
    load_model,
    load_tokenizer,
)
from malpyeong.models.checks import generation_problem
from malpyeong.models.runfolder import (
    ADAPTER_CONFIG,
    MODEL_CONFIG,
    RUN_FILE,
    adapter_of,
    checkpoint_run,
    has_run_file,
    has_tokenizer,
    is_adapter,
    is_finished_run,
    is_model,
    read_json,
    read_run,
    tokenizer_of,
    weights_of,
)

log = logging.getLogger(__name__)


@dataclass
class ModelSource:
    """What to load: the weights, the adapter on top, the tokenizer, and the run's defaults."""

    kind: str  # "run", "adapter", "local" or "hub"
    weights: str  # model folder or hub id whose weights are loaded
    base: str  # the base model id/path (its backbone entry gives the chat format)
    adapter: str | None = None  # LoRA adapter folder to attach
    tokenizer: str | None = None  # where the tokenizer is read from
    run: dict = field(default_factory=dict)  # malpyeong_run.json when from a run folder
    option: str = "model"  # the command-line option that named it (messages say which)
    given: str = ""  # what the user gave (a run folder, a hub id), for messages

    @property
    def defaults(self) -> dict:
        """Prediction defaults recorded by training (prompt variant, max_length)."""
        return {k: self.run[k] for k in ("prompt", "max_length") if self.run.get(k) is not None}


def _adapter_base(folder: Path) -> str:
    config = read_json(folder / ADAPTER_CONFIG)
    base = config.get("base_model_name_or_path")
    if not base:
        raise UserError(
            "adapter config names no base model",
            file=str(folder / ADAPTER_CONFIG),
            field="base_model_name_or_path",
        )
    return str(base)


def resolve_source(name: str | os.PathLike, *, option: str = "model") -> ModelSource:
    """Decide what ``name`` is (run folder, adapter, local model, hub id) without loading it;
    ``option`` is the command-line option that named it (``summarizer``), which messages name."""
    try:
        return replace(_resolve(str(name), option), option=option, given=str(name))
    except UserError as err:
        raise renamed(err, option) from None


def renamed(err: UserError, option: str) -> UserError:
    """``err`` naming ``option`` where it said ``model`` (the same folder given to --summarizer)."""
    if err.field != "model" or option == "model":
        return err
    return UserError(err.problem, file=err.file, item=err.item, field=option, hint=err.hint)


def check_generates(source: ModelSource) -> None:
    """Refuse, before anything is loaded, a model that cannot write text (an encoder, a
    classifier that is no malpyeong classification run), naming what the folder is."""
    if is_classifier_run(source.run):
        return
    try:
        problem = generation_problem(source.weights)
    except UserError as err:
        raise renamed(err, source.option) from None
    if problem:
        raise UserError(
            problem,
            file=source.weights,
            field=source.option,
            hint="give a causal language model: a run folder, an adapter or a model folder",
        )


def _resolve(name: str, option: str) -> ModelSource:
    path = Path(name)
    if path.is_dir():
        if has_run_file(path):
            if not is_finished_run(path):
                raise UserError(
                    "its training has not finished",
                    file=name,
                    field="model",
                    hint="resume it with --resume, or predict from one of its checkpoint-N folders",
                )
            return _run_source(path)
        owner = checkpoint_run(path)  # checkpoint-N of a run: the run's prompt and budget
        run = read_run(owner) if owner is not None else {}
        if is_adapter(path):
            base = _adapter_base(path)
            return ModelSource(
                "adapter",
                base,
                base,
                adapter=str(path),
                tokenizer=str(path) if has_tokenizer(path) else base,
                run=run,
            )
        if is_model(path):
            return ModelSource("local", name, run.get("model") or name, tokenizer=name, run=run)
        raise UserError(
            f"not a model folder (no {MODEL_CONFIG}, {ADAPTER_CONFIG} or {RUN_FILE})",
            file=name,
            field="model",
        )
    if path.exists():
        raise UserError("is a file, not a model folder or hub id", file=name, field="model")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError("folder not found", file=name, field="model", hint="check the path")
    return ModelSource("hub", name, name, tokenizer=name)


def _run_source(path: Path) -> ModelSource:
    """A run folder: its full model when it has one (fastest at inference), else its adapter
    on the base named in the run file."""
    run = read_run(path)
    base = run["model"]
    weights = weights_of(path, run)
    if weights is not None:
        return ModelSource("run", str(weights), base, tokenizer=tokenizer_of(weights, path, base), run=run)
    adapter = adapter_of(path, run)
    if adapter is not None:
        return ModelSource(
            "run", base, base, adapter=str(adapter), tokenizer=tokenizer_of(adapter, path, base), run=run
        )
    raise UserError(
        "the run folder has neither a merged model nor an adapter "
        f"(merged_dir={run.get('merged_dir')!r}, adapter_dir={run.get('adapter_dir')!r})",
        file=str(path),
        field="model",
        hint="did training finish?",
    )


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    backbone: Backbone
    source: ModelSource


def load_for_inference(
    name: str | os.PathLike | ModelSource,
    *,
    dtype: str | None = "auto",
    device: str | None = None,
    load_in_4bit: bool = False,
    trust_remote_code: bool | None = None,
    merge: bool = True,
    with_model: bool = True,
) -> Loaded:
    """Model (eval mode), tokenizer (left padding) and backbone for ``name``.

    ``load_in_4bit`` loads the base NF4-quantised (QLoRA style; needs a GPU and bitsandbytes);
    the adapter then stays attached instead of being merged. ``with_model=False`` loads only the
    tokenizer (for checks that need no weights).
    """
    source = name if isinstance(name, ModelSource) else resolve_source(name)
    try:
        return _load_for_inference(source, dtype, device, load_in_4bit, trust_remote_code, merge, with_model)
    except UserError as err:  # a folder given to --summarizer is named so, not as --model
        raise renamed(err, source.option) from None


def check_run_task(source: ModelSource, task: str) -> None:
    """A training run answers the task it was trained for: another one is refused naming both
    (its prompt variants and output format belong to its own task)."""
    trained = source.run.get("task")
    if trained and trained != task:
        raise UserError(
            f"this run was trained for task {trained}, not {task}",
            file=source.given or None,
            field=source.option,
            hint=f"give a run of task {task}, or a model folder",
        )


def _load_for_inference(
    source: ModelSource,
    dtype: str | None,
    device: str | None,
    load_in_4bit: bool,
    trust_remote_code: bool | None,
    merge: bool,
    with_model: bool,
) -> Loaded:
    check_generates(source)
    # The base's registry entry when it has one (a merged copy keeps the base's chat quirks);
    # otherwise what the loaded weights' own config.json says.
    backbone = REGISTRY.get(source.base) or get_backbone(source.weights)
    tokenizer = load_tokenizer(
        source.tokenizer or source.weights, backbone, trust_remote_code=trust_remote_code
    )
    tokenizer.padding_side = "left"
    model = None
    if with_model:
        model = load_weights(
            source,
            backbone,
            tokenizer,
            dtype=dtype,
            device=device,
            load_in_4bit=load_in_4bit,
            trust_remote_code=trust_remote_code,
            merge=merge,
        )
    log.info(
        "loaded %s (%s%s)",
        source.weights,
        source.kind,
        f", adapter {source.adapter}" if source.adapter else "",
    )
    return Loaded(model, tokenizer, backbone, source)


def load_weights(
    source: ModelSource,
    backbone: Backbone,
    tokenizer: Any,
    *,
    dtype: str | None = "auto",
    device: str | None = None,
    load_in_4bit: bool = False,
    trust_remote_code: bool | None = None,
    merge: bool = True,
) -> Any:
    """The model of ``source`` in eval mode, on ``device`` (default: :func:`~malpyeong.device.
    default_device`), for a tokenizer and backbone already in hand (:func:`load_for_inference`
    loads them; merge search scores many candidates with one tokenizer)."""
    if load_in_4bit and not cuda_available():
        log.warning(
            "--load_in_4bit on a CPU: NF4 weights through bitsandbytes' CPU path "
            "(slow; 4-bit loading is meant for GPUs)"
        )
    # a classification-head run: the base as a sequence classifier with the run's head
    num_labels = source.run.get("num_labels") if is_classifier_run(source.run) else None
    model = load_model(
        source.weights,
        "qlora" if load_in_4bit else "full",
        backbone=backbone,
        dtype=dtype,
        device_map=device_map(device),
        trust_remote_code=trust_remote_code,
        num_labels=num_labels,
    )
    if load_in_4bit and not getattr(model, "is_loaded_in_4bit", False):
        raise UserError(
            "--load_in_4bit did not give 4-bit weights (bitsandbytes has no 4-bit backend on this device)",
            field="load_in_4bit",
            hint="drop --load_in_4bit, or run on a GPU",
        )
    if num_labels is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if source.adapter:
        model = _attach_adapter(model, tokenizer, source.adapter, merge and not load_in_4bit)
    return model.eval()


def load_engine(
    source: ModelSource,
    *,
    engine: str = "hf",
    dtype: str | None = "auto",
    device: str | None = None,
    load_in_4bit: bool = False,
    trust_remote_code: bool | None = None,
    seed: int = 0,
    tensor_parallel_size: int = 1,
    structured: bool = False,
) -> Engine:
    """The answering engine for ``source``: a transformers model (``hf``), or a ``vllm.LLM``
    on a merged model folder or hub id (``vllm``, split over ``tensor_parallel_size`` GPUs;
    the tokenizer is loaded here for the prompts). ``structured``: generations will be
    constrained to a JSON schema (vLLM is then set to use llguidance for it, the library the
    HF engine uses)."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine '{engine}'", field="engine", hint=", ".join(ENGINES))
    loaded = load_for_inference(
        source,
        dtype=dtype,
        device=device,
        load_in_4bit=load_in_4bit,
        trust_remote_code=trust_remote_code,
        with_model=engine == "hf",
    )
    if engine == "hf":
        kind = ClassifierEngine if is_classifier_run(source.run) else HFEngine
        return kind(loaded.model, loaded.tokenizer, loaded.backbone)
    if is_classifier_run(source.run):
        raise UserError("a classification head runs on the hf engine", field="engine", hint="--engine hf")
    if source.adapter:
        raise UserError(
            "--engine vllm needs a merged model, this is an adapter",
            file=source.adapter,
            hint="train with --merge, or use --engine hf",
        )
    try:
        from vllm import LLM
    except ImportError:
        raise UserError(
            "vLLM is not installed", field="engine", hint="pip install vllm, or use --engine hf"
        ) from None
    llm = LLM(
        model=source.weights,
        tokenizer=source.tokenizer or source.weights,
        dtype="auto" if dtype in (None, "auto") else dtype,
        seed=seed,
        trust_remote_code=bool(trust_remote_code),
        tensor_parallel_size=tensor_parallel_size,
        **(vllm_engine_kwargs(LLM) if structured else {}),
    )
    return VLLMEngine(llm, loaded.tokenizer, loaded.backbone)


def _attach_adapter(model: Any, tokenizer: Any, adapter: str, merge: bool) -> Any:
    try:
        from peft import PeftModel
    except ImportError as err:
        raise UserError("loading a LoRA adapter needs peft", hint="pip install peft") from err
    emb = model.get_input_embeddings()
    if emb is not None and len(tokenizer) > emb.weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))  # training added tokens (e.g. a pad)
    try:
        model = PeftModel.from_pretrained(model, adapter)
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"cannot attach adapter: {one_line(err)}", file=adapter, field="model") from None
    return model.merge_and_unload() if merge else model


__all__ = [
    "Loaded",
    "ModelSource",
    "check_generates",
    "check_run_task",
    "load_engine",
    "load_for_inference",
    "load_weights",
    "resolve_source",
]
