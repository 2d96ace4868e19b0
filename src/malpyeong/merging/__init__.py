"""Weight merging: LoRA adapters with peft, full models with a streaming merger or mergekit.

One YAML in mergekit's schema describes a merge::

    merge_method: linear            # linear, task_arithmetic, ties, dare_ties, slerp, ...
    base_model: path/or/hub-id      # the common base (adapters; task arithmetic, ties, ...)
    models:
      - model: runs/cci/qwen_lora   # a run folder, an adapter folder or a full model folder
        parameters: {weight: 0.6, density: 0.7}
      - model: runs/cci/qwen_lora_seed2
        parameters: {weight: 0.4, density: 0.7}
    parameters: {normalize: true}   # defaults for every model, and method-wide options
    dtype: bfloat16                 # the dtype tensors are merged in; out_dtype: the saved one
    tokenizer_source: base          # base, or a model path (union / tokenizer: -> mergekit)
    search:                         # malpyeong's own key (ignored by mergekit): the --search grid
      merge_method: [linear, ties]
      weight: [[0.5, 0.5], [0.7, 0.3]]
      density: [0.5, 0.8]

**LoRA adapters on one base** are merged by peft's ``add_weighted_adapter`` into one new adapter
(or, with ``fold``, also into a full copy of the base); ``linear`` and ``task_arithmetic`` are
the exact weighted mean / sum of the adapters' deltas (see :mod:`.adapters` for why and for the
other methods).

**Full models** are merged out of core. ``linear`` and ``task_arithmetic`` with scalar weights
run through our streaming merger (:mod:`.streaming`), whose peak memory is the interpreter plus
a few copies of the largest tensor. Everything else (ties, dare, slerp, model_stock, slices,
``base+adapter`` references, tokenizer unions) goes to mergekit's own lazy-loading executor
(:mod:`.mergekit_engine`; ``engine: mergekit`` forces it for any method).

The output is a run folder like the trainer's (:mod:`malpyeong.models.runfolder`): ``adapter/`` (a
peft adapter with the tokenizer) and/or a full model with its tokenizer at the folder's root, as
mergekit writes it, plus ``malpyeong_run.json`` beside it, so ``run/test.py --model OUT``,
``from_pretrained(OUT)`` and vLLM load it unchanged.

Modules, each importing only those above it:

- ``config``: the YAML parsed into a :class:`MergeConfig`, models and run folders resolved
- ``output``: the run folder: staging and publishing, tokenizer files, ``malpyeong_run.json``
- ``adapters``: LoRA adapters merged with peft
- ``streaming``: safetensors read and written tensor by tensor; :func:`stream_merge`
- ``mergekit_engine``: :func:`mergekit_merge` (not ``mergekit.py``: it would shadow the library)
- ``search``: the ``--search`` grid and the dev score of one candidate
- ``jobs``: what ``ensemble/merge.py`` runs (:func:`run_merge_job`), engine choice, the search loop
"""

from malpyeong.merging.adapters import (
    ADAPTER_METHODS,
    adapter_arguments,
    adapter_base,
    add_merged_adapter,
    check_ranks,
    load_adapters,
    save_adapter_run,
)
from malpyeong.merging.config import (
    DEFAULT_NORMALIZE,
    DENSITY_METHODS,
    OUR_KEYS,
    MergeConfig,
    ModelRef,
    load_config,
    mergekit_dict,
    parse_config,
    with_point,
)
from malpyeong.merging.jobs import ENGINES, MergeJob, merge_full, run_merge_job
from malpyeong.merging.mergekit_engine import mergekit_merge
from malpyeong.merging.output import TOKENIZER_FILES, copy_tokenizer
from malpyeong.merging.search import EvalOptions, evaluate_model, format_search_table, search_grid
from malpyeong.merging.streaming import (
    ST_DTYPES,
    STREAM_METHODS,
    SafetensorsWriter,
    TensorInfo,
    TensorReader,
    model_tensors,
    parse_size,
    read_header,
    stream_merge,
    stream_unsupported,
)

__all__ = [
    "ADAPTER_METHODS",
    "DEFAULT_NORMALIZE",
    "DENSITY_METHODS",
    "ENGINES",
    "OUR_KEYS",
    "ST_DTYPES",
    "STREAM_METHODS",
    "TOKENIZER_FILES",
    "EvalOptions",
    "MergeConfig",
    "MergeJob",
    "ModelRef",
    "SafetensorsWriter",
    "TensorInfo",
    "TensorReader",
    "add_merged_adapter",
    "adapter_arguments",
    "adapter_base",
    "check_ranks",
    "copy_tokenizer",
    "evaluate_model",
    "format_search_table",
    "load_adapters",
    "load_config",
    "merge_full",
    "mergekit_dict",
    "mergekit_merge",
    "model_tensors",
    "parse_config",
    "parse_size",
    "read_header",
    "run_merge_job",
    "save_adapter_run",
    "search_grid",
    "stream_merge",
    "stream_unsupported",
    "with_point",
]
