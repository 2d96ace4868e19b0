"""Teacher distillation: a large model writes training targets for a smaller student.

    python run/distill.py --teacher Qwen/Qwen2-7B-Instruct --task dcs \\
        --in resource/data/dcs_train.json --out data/dcs_distill.jsonl
    python run/distill.py --teacher x2bee/POLAR-14B-v0.2 --task cci \\
        --in resource/data/cci_train.json --out data/cci_distill.jsonl --prompt highlight+cot

DCS: the teacher summarises every dialogue (greedy, or --num_beams); the cleaned summary is the
completion. CCI: the teacher gets the task's ``cot`` prompt (a short rationale, then '정답: X');
a rationale is kept only when the teacher's answer is the gold one, and the completion is the
task's CoT target. Output JSONL records ``{"id", "prompt_messages", "completion",
"source": "distill", "task"}``: train a student on them together with the gold data.

Every teacher output is kept in OUT.raw.jsonl: rerun the same command to resume after an
interruption; rerun with --overwrite to rebuild OUT without the teacher. OUT.report.json gives
the counts (and, for CCI, the teacher's accuracy).
"""

from __future__ import annotations

import argparse
import json
import sys

from malpyeong.answer import AnswerSettings
from malpyeong.cli import run_cli, task_argument
from malpyeong.data import load_items
from malpyeong.engines import GenerationSettings, HFEngine
from malpyeong.errors import UserError
from malpyeong.io import atomic_write_json, atomic_write_text, ensure_writable
from malpyeong.prep.distill import distill, engine_generate, open_raw, raw_path, student_prompt
from malpyeong.tasks import get_task


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--teacher", required=True, help="teacher model: hub id or local path")
    task_argument(p)
    p.add_argument(
        "--in",
        dest="inp",
        required=True,
        metavar="TRAIN.json",
        help="official-format file (CCI: with gold answers)",
    )
    p.add_argument("--out", required=True, help="output JSONL")
    p.add_argument(
        "--prompt", help="prompt variant (CCI always adds 'cot'; default: cot / baseline)"
    )
    p.add_argument(
        "--max_length",
        type=int,
        default=4096,
        help="prompt + answer token budget (the dialogue is cut to fit)",
    )
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--num_beams", type=int, default=1)
    p.add_argument("--dtype", default="auto", help="bf16, fp16, fp32 or auto")
    p.add_argument(
        "--method",
        default="full",
        choices=("full", "qlora"),
        help="qlora loads the teacher in 4 bits (GPU only)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args(argv)
    for name in ("max_length", "max_new_tokens", "batch_size", "num_beams"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}", field=name)
    if args.max_new_tokens >= args.max_length:
        raise UserError(
            "--max_new_tokens must be smaller than --max_length", field="max_new_tokens"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = get_task(args.task)
    spec = student_prompt(task, args.prompt)  # an unknown variant fails before anything loads
    out = ensure_writable(args.out, args.overwrite)
    report_path = out.with_name(out.name + ".report.json")  # goes with OUT
    items = load_items(args.inp, task, require_output=task.distill_needs_gold)
    meta = {
        "teacher": args.teacher,
        "task": task.name,
        "prompt": str(spec),
        "max_length": args.max_length,
        "max_new_tokens": args.max_new_tokens,
        "num_beams": args.num_beams,
    }
    done, raw = open_raw(raw_path(out), meta, "id")
    with raw:
        generate = _never
        if any(it.id not in done for it in items):
            from malpyeong.backbones import get_backbone, load_model, load_tokenizer

            backbone = get_backbone(args.teacher)
            tokenizer = load_tokenizer(args.teacher, backbone)
            model = load_model(
                args.teacher,
                args.method,
                backbone=backbone,
                dtype=args.dtype,
                device_map={"": 0} if _cuda() else None,
            )
            settings = AnswerSettings(
                prompt=spec,
                max_length=args.max_length,
                generation=GenerationSettings(
                    max_new_tokens=args.max_new_tokens, num_beams=args.num_beams
                ),
                batch_size=args.batch_size,
            )
            tokenizer.padding_side = "left"
            generate = engine_generate(HFEngine(model, tokenizer, backbone), task, settings)
        records, report = distill(
            task,
            items,
            generate,
            prompt=spec,
            done=done,
            on_row=raw.write,
            chunk_size=args.batch_size * 4,
            show_progress=not args.no_progress,
        )
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_json(
        report_path,
        {
            "teacher": args.teacher,
            "input": str(args.inp),
            "resumed": sum(it.id in done for it in items),
            "raw": str(raw_path(out)),
            **report,
        },
    )
    extra = (
        f", teacher accuracy {report['teacher_accuracy']:.3f}"
        if "teacher_accuracy" in report
        else ""
    )
    print(f"{out}: {len(records)} of {len(items)} items kept{extra} (see {report_path})")
    return 0


def _never(items: list) -> list[str]:
    raise AssertionError("every item is in the raw file; the teacher is not needed")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(run_cli(main))
