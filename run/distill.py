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

Self-distillation (generate tasks, what the DCS 대상 team did after SFT and KTO): the fine-tuned
model is its own teacher.

    python run/distill.py --teacher runs/dcs/gemma_kto --self --task dcs \
        --in resource/data/dcs_train.json --out data/dcs_self.jsonl --num_candidates 4

--teacher is then a run folder (or any model run/test.py takes; its prompt and max_length are
the defaults). Per item, --num_candidates generations (the first greedy, the others sampled at
--temperature / --top_p), cleaned; over-long (> --max_length_ratio x the gold length, or the
median candidate's without gold) and repetitive ones are dropped; the one kept has the best dev
metric against gold where gold exists, else the best agreement with the other candidates (MBR;
ROUGE-1, or BERTScore with --bertscore_model). --select gold / mbr forces one rule. Records
carry "source": "self_distill"; train the next round with --extra_train_files OUT.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from malpyeong.cli import run_cli, task_argument, verbose_argument
from malpyeong.data import load_items
from malpyeong.ensemble.mbr import bertscore_similarity, rouge1_similarity
from malpyeong.errors import UserError
from malpyeong.inference.answer import AnswerSettings
from malpyeong.inference.engines import GenerationSettings
from malpyeong.inference.loading import load_engine, resolve_source
from malpyeong.io import (
    atomic_write_json,
    atomic_write_text,
    check_distinct,
    check_folder_writable,
    ensure_writable,
    open_resume,
    resume_path,
)
from malpyeong.prep.distill import distill, engine_generate, student_prompt
from malpyeong.prep.self_distill import (
    SELECT,
    SelfDistillSettings,
    candidate_generator,
    generate_candidates,
    select_candidates,
)
from malpyeong.tasks import Task, get_task


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--prompt", help="prompt variant (CCI always adds 'cot'; default: cot / baseline)")
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
    s = p.add_argument_group("self-distillation (--self)")
    s.add_argument(
        "--self",
        dest="self_distill",
        action="store_true",
        help="the fine-tuned model (--teacher: a run folder) writes its own targets",
    )
    s.add_argument("--num_candidates", type=int, default=4, help="generations per item")
    s.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    s.add_argument("--top_p", type=float, default=0.9, help="nucleus sampling")
    s.add_argument("--seed", type=int, default=0, help="candidate k samples with seed + k")
    s.add_argument(
        "--select",
        default="auto",
        choices=SELECT,
        help="auto: metric against gold where there is gold, else MBR",
    )
    s.add_argument(
        "--max_length_ratio",
        type=float,
        default=2.0,
        help="drop candidates longer than this x the reference length",
    )
    s.add_argument("--bertscore_model", help="MBR by BERTScore with this local model (default: ROUGE-1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--no_progress", action="store_true")
    verbose_argument(p)
    args = p.parse_args(argv)
    for name in ("max_length", "max_new_tokens", "batch_size", "num_beams"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}", field=name)
    if args.max_new_tokens >= args.max_length:
        raise UserError("--max_new_tokens must be smaller than --max_length", field="max_new_tokens")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = get_task(args.task)
    if args.self_distill:
        return main_self(args, task)
    spec = student_prompt(task, args.prompt)  # an unknown variant fails before anything loads
    out = Path(args.out)
    report_path = out.with_name(out.name + ".report.json")  # goes with OUT
    check_distinct(
        [("--out", out), ("the report", report_path), ("the raw file", resume_path(out))],
        [("--in", args.inp)],
    )
    ensure_writable(out, args.overwrite)  # the report goes with OUT (rewritten with it)
    check_folder_writable(report_path.parent, what=str(report_path))
    items = load_items(args.inp, task, require_output=task.distill_needs_gold)
    meta = {
        "teacher": args.teacher,
        "task": task.name,
        "prompt": str(spec),
        "max_length": args.max_length,
        "max_new_tokens": args.max_new_tokens,
        "num_beams": args.num_beams,
    }
    done, raw = open_resume(resume_path(out), meta, "id")
    with raw:
        generate = _never
        if any(it.id not in done for it in items):
            engine = load_engine(  # the teacher only when something is left to answer
                resolve_source(args.teacher), dtype=args.dtype, load_in_4bit=args.method == "qlora"
            )
            settings = AnswerSettings(
                prompt=spec,
                max_length=args.max_length,
                generation=GenerationSettings(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams),
                batch_size=args.batch_size,
            )
            generate = engine_generate(engine, task, settings)
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
            "raw": str(resume_path(out)),
            **report,
        },
    )
    extra = f", teacher accuracy {report['teacher_accuracy']:.3f}" if "teacher_accuracy" in report else ""
    print(f"{out}: {len(records)} of {len(items)} items kept{extra} (see {report_path})")
    return 0


def main_self(args: argparse.Namespace, task: Task) -> int:
    """--self: candidates from the fine-tuned model, the best agreeing one kept per item."""
    if task.has_options:  # self-distillation keeps the candidate the others agree with
        raise UserError(
            f"--self is for generate tasks, not {task.name}",
            field="self",
            hint="drop --self to distil from a teacher",
        )
    settings = SelfDistillSettings(
        num_candidates=args.num_candidates, max_length_ratio=args.max_length_ratio, select=args.select
    )
    source = resolve_source(args.teacher)
    spec = student_prompt(task, args.prompt or source.defaults.get("prompt"))
    out = ensure_writable(args.out, args.overwrite)
    report_path = out.with_name(out.name + ".report.json")
    items = load_items(args.inp, task)
    meta = {
        "teacher": args.teacher,
        "task": task.name,
        "prompt": str(spec),
        "max_length": args.max_length,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
        "self": True,
    }
    done, raw = open_resume(resume_path(out), meta, "key")
    with raw:
        generate = _never_k
        if any(f"{it.id}#{k}" not in done for it in items for k in range(args.num_candidates)):
            engine = load_engine(source, dtype=args.dtype)
            answer = AnswerSettings(
                prompt=spec,
                max_length=args.max_length,
                generation=GenerationSettings(max_new_tokens=args.max_new_tokens),
                batch_size=args.batch_size,
            )
            generate = candidate_generator(
                engine, task, answer, temperature=args.temperature, top_p=args.top_p, seed=args.seed
            )
        texts = generate_candidates(items, generate, args.num_candidates, done=done, on_row=raw.write)
    similarity = bertscore_similarity(args.bertscore_model) if args.bertscore_model else rouge1_similarity
    records, report = select_candidates(task, items, texts, settings, similarity, prompt=spec)
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_json(
        report_path, {"teacher": args.teacher, "input": str(args.inp), "raw": str(resume_path(out)), **report}
    )
    print(
        f"{out}: {len(records)} of {len(items)} items kept, {args.num_candidates} candidates "
        f"each (see {report_path})"
    )
    return 0


def _never_k(items: list, k: int) -> list[str]:
    raise AssertionError("every candidate is in the raw file; the model is not needed")


def _never(items: list) -> list[str]:
    raise AssertionError("every item is in the raw file; the teacher is not needed")


if __name__ == "__main__":
    sys.exit(run_cli(main))
