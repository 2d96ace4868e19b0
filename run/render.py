"""Show the exact prompts a model will see, after its chat template and the length budget.

    python run/render.py --task cci --data resource/data/cci_dev.json --model models/tiny-llama \
        --prompt highlight+definitions --max_length 1024 --n 2

Prints each rendered prompt (and the training target when the item has gold), then how many
prompts were cut to fit ``--max_length``.
"""

from __future__ import annotations

import argparse
import sys

from malpyeong.cli import run_cli, task_argument, verbose_argument
from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.models.backbones import get_backbone, load_tokenizer
from malpyeong.models.budget import fit_prompt
from malpyeong.tasks import get_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    task_argument(parser)
    parser.add_argument("--data", required=True, help="a data file of the task")
    parser.add_argument("--model", required=True, help="hub id or local path (for its tokenizer)")
    parser.add_argument("--prompt", default="baseline", help="prompt variant, flags joined by '+'")
    parser.add_argument("--max_length", type=int, default=None, help="token budget for the prompt")
    parser.add_argument("--n", type=int, default=1, help="how many prompts to print (0: none)")
    verbose_argument(parser)
    args = parser.parse_args(argv)
    if args.n < 0:
        raise UserError(f"must be 0 or more, got {args.n}", field="n")
    if args.max_length is not None and args.max_length < 1:
        raise UserError(f"must be at least 1, got {args.max_length}", field="max_length")
    task = get_task(args.task)
    spec = task.prompt_spec(args.prompt)
    items = load_items(args.data, task)
    backbone = get_backbone(args.model)
    tokenizer = load_tokenizer(args.model, backbone)
    fitted = [fit_prompt(task, it, tokenizer, backbone, spec, args.max_length) for it in items]
    for item, fp in list(zip(items, fitted, strict=False))[: args.n]:
        print(f"===== {item.id} ({len(fp.input_ids)} tokens, {fp.dropped} {task.cut_unit} cut)")
        print(fp.text)
        if task.has_output(item):
            print(f"----- target\n{task.target_for(item, spec)}")
    lengths = sorted(len(fp.input_ids) for fp in fitted)
    cut = sum(fp.dropped > 0 for fp in fitted)
    print(
        f"{len(items)} prompts ({spec}), tokens min {lengths[0]} / median {lengths[len(lengths) // 2]}"
        f" / max {lengths[-1]}; {cut} cut to fit {args.max_length or 'no limit'}"
        f"{'; ' + str(sum(not f.fits for f in fitted)) + ' still over' if not all(f.fits for f in fitted) else ''}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
