"""The streaming full-model merger: ``linear`` and ``task_arithmetic`` with scalar weights.

Each tensor is read from each model with plain file reads at its safetensors offset (no memory
map, so pages of the inputs never count in the process's memory), combined with the same
arithmetic as mergekit's methods, and written straight to the output file, whose header is
computed in advance. The peak memory is the interpreter plus a few copies of the largest tensor.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from malpyeong.cli import progress_bar
from malpyeong.errors import UserError
from malpyeong.io import atomic_write_json
from malpyeong.merging.config import MergeConfig, mergekit_dict, torch_dtype
from malpyeong.merging.output import copy_tokenizer, tokenizer_source

STREAM_METHODS = ("linear", "task_arithmetic")
ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
_ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


@dataclass
class TensorInfo:
    file: Path
    start: int  # absolute byte offset in the file
    nbytes: int
    dtype: str  # safetensors code
    shape: tuple[int, ...]


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensor locations and metadata of one safetensors file (its JSON header only)."""
    path = Path(path)
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise UserError("not a safetensors file", file=str(path))
        (size,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(size))
        except ValueError:
            raise UserError("not a safetensors file (bad header)", file=str(path)) from None
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        out[name] = TensorInfo(path, 8 + size + b, e - b, h["dtype"], tuple(h["shape"]))
    return out, meta


def model_tensors(folder: str | os.PathLike) -> dict[str, TensorInfo]:
    """Every tensor of a model folder (single file or sharded with an index)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise UserError(
            "no safetensors weights (model.safetensors[.index.json])",
            file=str(folder),
            hint="use engine: mergekit for .bin checkpoints",
        )
    out: dict[str, TensorInfo] = {}
    for f in files:
        out.update(read_header(folder / f)[0])
    return out


class TensorReader:
    """Reads one tensor at a time with plain reads (no mmap); drops the pages it read."""

    def __init__(self) -> None:
        self._files: dict[Path, Any] = {}

    def read(self, info: TensorInfo) -> Any:
        import torch

        fh = self._files.get(info.file)
        if fh is None:
            fh = self._files[info.file] = open(info.file, "rb", buffering=0)
        dtype = getattr(torch, ST_DTYPES[info.dtype])
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=dtype)
        buf = bytearray(info.nbytes)
        view = memoryview(buf)
        done = 0
        while done < info.nbytes:
            n = os.preadv(fh.fileno(), [view[done:]], info.start + done)
            if n <= 0:
                raise UserError("file ends early", file=str(info.file))
            done += n
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fh.fileno(), info.start, info.nbytes, os.POSIX_FADV_DONTNEED)
        return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()


def _st_code(dtype: Any) -> str:
    name = str(dtype).replace("torch.", "")
    for code, n in ST_DTYPES.items():
        if n == name:
            return code
    raise ValueError(f"no safetensors code for {dtype}")


class SafetensorsWriter:
    """Writes a safetensors file tensor by tensor: the header (all offsets) goes first."""

    def __init__(
        self,
        path: Path,
        specs: Sequence[tuple[str, str, tuple[int, ...]]],
        metadata: dict[str, str] | None = None,
    ) -> None:
        header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        self.expected = []
        for name, code, shape in specs:
            size = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE[code]
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
            self.expected.append((name, size))
            offset += size
        blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
        blob += b" " * (-len(blob) % 8)  # 8-byte alignment of the data, as safetensors writes
        self.fh = open(path, "wb")
        self.fh.write(struct.pack("<Q", len(blob)))
        self.fh.write(blob)
        self.next = 0

    def write(self, name: str, tensor: Any) -> None:
        import torch

        want, size = self.expected[self.next]
        if name != want:
            raise RuntimeError(f"tensor {name} written out of order (expected {want})")
        data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
        if data.nbytes != size:
            raise RuntimeError(f"tensor {name}: {data.nbytes} bytes, header says {size}")
        self.fh.write(memoryview(data))
        self.next += 1

    def close(self) -> None:
        if self.next != len(self.expected):
            raise RuntimeError("not every tensor was written")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()


def stream_unsupported(cfg: MergeConfig) -> str | None:
    """Why the streaming merger cannot do ``cfg`` (None when it can)."""
    if cfg.method not in STREAM_METHODS:
        return f"method {cfg.method}"
    if any(k in cfg.raw for k in ("slices", "modules", "tokenizer", "chat_template")):
        return "slices/modules/tokenizer settings"
    if cfg.tokenizer_source == "union":
        return "tokenizer_source: union"
    if any(m.kind != "full" for m in cfg.models):
        return "adapter references"
    refs = [m.path for m in cfg.models] + ([cfg.base_model] if cfg.base_model else [])
    for ref in refs:
        p = Path(ref)
        if not ((p / "model.safetensors").is_file() or (p / "model.safetensors.index.json").is_file()):
            return f"{ref} is not a local safetensors model"
    allowed_model, allowed_top = {"weight"}, {"normalize", "lambda", "weight"}
    for m in cfg.models:
        if set(m.params) - allowed_model:
            return f"parameters {sorted(set(m.params) - allowed_model)}"
        if not isinstance(cfg.param(m, "weight", 0.0), (int, float)):
            return "weight gradients or filters"
    if set(cfg.parameters) - allowed_top:
        return f"parameters {sorted(set(cfg.parameters) - allowed_top)}"
    if cfg.method == "task_arithmetic" and not cfg.base_model:
        return "task_arithmetic without base_model"
    return None


def parse_size(text: str | int) -> int:
    """'2GB', '500MB', '1e9' -> bytes."""
    if isinstance(text, int):
        return text
    t = str(text).strip().upper()
    for unit, mult in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * mult)
    return int(float(t))


def stream_merge(
    cfg: MergeConfig, out_dir: Path, *, shard_size: int = 5 * 10**9, progress: bool = True
) -> Path:
    """Merge full models tensor by tensor into ``out_dir`` (see the module docstring).

    ``linear``: ``sum(w_i * T_i) / sum(w_i)`` (``normalize``, default on) computed in float32
    (float64 for float64 inputs), cast back to the merge dtype. ``task_arithmetic``:
    ``B + lambda * sum(w_i * (T_i - B))`` (divided by ``sum(w_i)`` when ``normalize``), in the
    merge dtype, as mergekit computes them.
    """
    import torch

    why = stream_unsupported(cfg)
    if why:
        raise UserError(
            f"the streaming merger cannot do this config ({why})",
            file=cfg.source,
            hint="use --engine mergekit",
        )
    base_path = cfg.base_model if cfg.method == "task_arithmetic" else None
    members = [m for m in cfg.models if base_path is None or m.path != base_path]
    if not members:
        raise UserError("no models besides the base", file=cfg.source, field="models")
    weights = [float(cfg.param(m, "weight", 1.0)) for m in members]
    tables = [model_tensors(m.path) for m in members]
    base_table = model_tensors(base_path) if base_path else None
    ref = base_table or tables[0]
    for m, t in zip(
        [*members, *([None] if base_table else [])],
        [*tables, *([base_table] if base_table else [])],
        strict=True,
    ):
        where = m.path if m else base_path
        if set(t) != set(ref):
            diff = sorted(set(t) ^ set(ref))
            raise UserError(
                f"tensor names differ from the first model's: {', '.join(diff[:3])}"
                + (" ..." if len(diff) > 3 else ""),
                file=where,
                hint="models of one architecture and vocabulary only; mergekit can handle other cases",
            )
        for name, info in t.items():
            if info.shape != ref[name].shape:
                raise UserError(
                    f"tensor {name} has shape {info.shape}, the first model {ref[name].shape}", file=where
                )
    merge_dtype = torch_dtype(cfg.dtype)
    out_dtype = torch_dtype(cfg.out_dtype) or merge_dtype
    normalize = cfg.normalize()
    lam = float(cfg.parameters.get("lambda", 1.0))
    names = sorted(ref, key=lambda n: (str(ref[n].file), ref[n].start))

    def out_code(name: str) -> str:
        native = ST_DTYPES[ref[name].dtype]
        floating = native.startswith(("float", "bfloat"))
        if floating and out_dtype is not None:
            return _st_code(out_dtype)
        if floating and merge_dtype is not None:
            return _st_code(merge_dtype)
        return ref[name].dtype

    specs = [(n, out_code(n), ref[n].shape) for n in names]
    shards: list[list[tuple[str, str, tuple[int, ...]]]] = [[]]
    used = 0
    for spec in specs:
        size = math.prod(spec[2]) * _ITEMSIZE[spec[1]]
        if shards[-1] and used + size > shard_size:
            shards.append([])
            used = 0
        shards[-1].append(spec)
        used += size
    files = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    reader = TensorReader()
    bar = progress_bar(len(names), progress, "merge tensors")
    try:
        for fname, shard in zip(files, shards, strict=True):
            writer = SafetensorsWriter(out_dir / fname, shard)
            for name, code, _ in shard:
                tensor = _merge_one(
                    reader,
                    name,
                    [t[name] for t in tables],
                    base_table[name] if base_table else None,
                    weights,
                    cfg.method,
                    merge_dtype,
                    normalize,
                    lam,
                )
                writer.write(name, tensor.to(getattr(torch, ST_DTYPES[code])))
                del tensor
                bar.update(1)
            writer.close()
    finally:
        reader.close()
        bar.close()
    if len(files) > 1:
        total = sum(math.prod(s[2]) * _ITEMSIZE[s[1]] for s in specs)
        atomic_write_json(
            out_dir / "model.safetensors.index.json",
            {
                "metadata": {"total_size": total},
                "weight_map": {s[0]: f for f, shard in zip(files, shards, strict=True) for s in shard},
            },
        )
    _finish_model_folder(cfg, out_dir, base_path or members[0].path, out_dtype or merge_dtype)
    return out_dir


def _merge_one(
    reader: TensorReader,
    name: str,
    infos: list[TensorInfo],
    base: TensorInfo | None,
    weights: list[float],
    method: str,
    merge_dtype: Any,
    normalize: bool,
    lam: float,
) -> Any:
    """One output tensor; the same operations, in the same order, as mergekit's methods."""
    import torch

    def load(info: TensorInfo) -> Any:
        t = reader.read(info)
        return t.to(merge_dtype) if merge_dtype is not None and t.is_floating_point() else t

    if method == "linear":
        first = load(infos[0])
        if not first.is_floating_point():
            return first
        acc = torch.float64 if first.dtype == torch.float64 else torch.float32
        w = torch.tensor(weights, dtype=acc)
        result = torch.zeros_like(first, dtype=acc)
        result.addcmul_(first, w[0])
        out_type = first.dtype
        del first
        for info, coef in zip(infos[1:], w[1:], strict=True):
            t = load(info)
            result.addcmul_(t, coef)
            del t
        if normalize:
            result.div_(w.sum())
        return result.to(out_type)
    b = load(base)
    if not b.is_floating_point():
        return b
    deltas = b.new_empty((len(infos), *b.shape))
    for i, info in enumerate(infos):
        deltas[i] = load(info) - b
    w = torch.tensor(weights, dtype=deltas.dtype).reshape(-1, *([1] * b.dim()))
    deltas.mul_(w)
    mixed = deltas.sum(dim=0)
    del deltas
    divisor = w.sum(dim=0)
    divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed /= divisor
    if lam != 1:
        mixed *= lam
    return (b + mixed).to(b.dtype)


def _finish_model_folder(cfg: MergeConfig, out_dir: Path, ref_model: str, dtype: Any) -> None:
    """config.json (dtype updated), generation config, tokenizer, provenance."""
    conf = json.loads((Path(ref_model) / "config.json").read_text(encoding="utf-8"))
    if dtype is not None:
        key = "dtype" if "dtype" in conf or "torch_dtype" not in conf else "torch_dtype"
        conf[key] = str(dtype).replace("torch.", "")
    (out_dir / "config.json").write_text(json.dumps(conf, indent=2), encoding="utf-8")
    gen = Path(ref_model) / "generation_config.json"
    if gen.is_file():
        shutil.copy2(gen, out_dir / gen.name)
    copy_tokenizer(tokenizer_source(cfg, ref_model) if cfg.tokenizer_source else ref_model, out_dir)
    (out_dir / "mergekit_config.yml").write_text(
        yaml.safe_dump(mergekit_dict(cfg), allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
