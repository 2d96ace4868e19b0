"""Shared fixtures: offline mode, our own tiny items, and tiny models of the four families."""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
# the shared data folder: $MALPYEONG_SHARED_DATA, else shared/data beside the checkout or any
# folder above it (a git worktree sits deeper than the main checkout)
SHARED_DATA = (
    Path(os.environ["MALPYEONG_SHARED_DATA"])
    if os.environ.get("MALPYEONG_SHARED_DATA")
    else next(
        (p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
        ROOT.parent / "shared" / "data",
    )
)
NIKL = SHARED_DATA / "nikl"
SAMPLES = ROOT / "resource" / "data"

CCI_ITEM = {
    "id": "t-cci-1",
    "input": {
        "conversation": [
            {"speaker": 1, "utterance": "어제 비가 많이 와서 우산을 샀어.", "utterance_id": "T1.1.1"},
            {"speaker": 2, "utterance": "나도 신발이 다 젖었어.", "utterance_id": "T1.1.2"},
            {"speaker": 1, "utterance": "오늘은 날씨가 맑대.", "utterance_id": "T1.1.3"},
            {"speaker": 2, "utterance": "그럼 공원에 산책 가자.", "utterance_id": "T1.1.4"},
        ],
        "reference_id": ["T1.1.4"],
        "category": "동기",
        "inference_1": "화자2는 맑은 날씨를 즐기고 싶어 한다.",
        "inference_2": "화자2는 비 오는 날을 좋아한다.",
        "inference_3": "화자2는 우산을 사고 싶어 한다.",
    },
    "output": "inference_1",
}

DCS_ITEM = {
    "id": "t-dcs-1",
    "input": {
        "conversation": [
            {"speaker": "SD9000001", "utterance": "요즘 요리를 배우고 있어요."},
            {"speaker": "SD9000002", "utterance": "어떤 요리를 배우세요?"},
            {"speaker": "SD9000001", "utterance": "주로 한식이요. 된장찌개를 제일 자주 만들어요."},
            {"speaker": "SD9000002", "utterance": "저는 빵 굽는 걸 좋아해요."},
        ],
        "subject_keyword": ["요리", "취미"],
    },
    "output": "두 화자는 이 대화에서 요리 취미에 대해 이야기했습니다.",
}


def load_script(path: str | Path):
    """A script of run/, orpo/, ensemble/ or eda/ imported as a module (its ``main`` runs in this
    process, so a test can call it without starting a new interpreter)."""
    path = Path(path) if Path(path).is_absolute() else ROOT / path
    name = "script_" + "_".join(path.relative_to(ROOT).with_suffix("").parts)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cci_record() -> dict:
    return copy.deepcopy(CCI_ITEM)


@pytest.fixture
def dcs_record() -> dict:
    return copy.deepcopy(DCS_ITEM)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """One tiny random model per family, built once per test session."""
    from malpyeong.models.tiny import FAMILIES, build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return {f: build_tiny_model(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="session")
def tiny_mamba(tmp_path_factory) -> Path:
    """A tiny Mamba (no attention, no chat template), built once per test session."""
    from malpyeong.models.tiny import build_tiny_model

    return build_tiny_model("mamba", tmp_path_factory.mktemp("tiny") / "mamba")


@pytest.fixture(scope="session")
def tiny_llama(tiny_models) -> Path:
    return tiny_models["llama"]


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine the OpenMP
    threads of two processes stall each other (measured 10x slower): tests use one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_embedder(tmp_path_factory) -> Path:
    """A tiny random BERT saved as a sentence-transformers model (similarity, BERTScore)."""
    from malpyeong.models.tiny import build_tiny_embedder

    return build_tiny_embedder(tmp_path_factory.mktemp("embedder") / "tiny-embedder")
