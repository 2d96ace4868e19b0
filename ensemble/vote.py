"""Combine several models' results files into one submission: voting (CCI) or MBR (DCS).

    D=resource/data
    python ensemble/vote.py results/*.json --output results/vote.json --test $D/cci_test.json
    python ensemble/vote.py results/dev/*.json --gold $D/cci_dev.json          # diagnostics only
    python ensemble/vote.py results/test/*.json --dev-results results/dev/*.json \\
        --gold $D/cci_dev.json --method soft --calibrate --output results/soft.json
    python ensemble/vote.py results/dev/*.json --gold $D/cci_dev.json --select members.json
    python ensemble/vote.py results/test/*.json --dev-results results/dev/*.json \\
        --gold $D/cci_dev.json --method stack --output results/stack.json
    python ensemble/vote.py results/test/*.json --members members.json --output results/sel.json
    python ensemble/vote.py results/dcs/*.json --task dcs --output results/dcs_mbr.json
    python ensemble/vote.py results/*.json --output results/vote.json --rules 2025   # refused

    python ensemble/vote.py results/test/* --output results/vote.json   # a run/test.py folder

Inputs are results files of run/test.py (NAME.json + NAME.sidecar.jsonl); a model's name is its
file stem. A folder's glob (results/test/*) works: the sidecars in it are recognised and read
with their results files; a folder itself is refused with a hint (not expanded, so dev and test
folders never mix). The file order changes nothing. Every input is checked first (same ids,
valid outputs, no duplicates): any problem stops the run with exit 2. Ties are broken by summed
sidecar probabilities, then the weights, then --priority, then -- without gold, sidecars or
weights -- each model's reliability estimated from the answers themselves (Dawid-Skene EM,
started from agreement with the majority); every tie and its rule is printed.
--method dawid_skene votes with that estimate outright. --method stack fits a logistic-regression
meta-learner on dev over each member's option probabilities and votes, reports its
cross-validated dev accuracy beside the plain votes', and answers with the model fitted on all of
dev (--folds, --seed; docs/ensembling-stack.md).
With --gold: per-model accuracy, agreement and error-correlation matrices, the ensemble's accuracy
and the oracle ceiling, computed on the gold file's items (the inputs themselves, or
--dev-results: the same models' dev predictions, matched by file name). DCS takes, per id, the
summary with the highest mean ROUGE-1 (or BERTScore with --bertscore-model) to the others.
"""

from __future__ import annotations

import argparse
import sys

from malpyeong.cli import run_cli, task_argument, verbose_argument
from malpyeong.ensemble import VOTE_METHODS, VoteJob, run_vote
from malpyeong.errors import UserError
from malpyeong.rules import check_ensemble, get_rules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "inputs", nargs="+", help="results files (results/NAME.json; their sidecars may be given too)"
    )
    parser.add_argument("--output", help="the combined submission to write")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    task_argument(
        parser, required=False, help="the task (default: named in the sidecars, else told from the outputs)"
    )
    parser.add_argument(
        "--test",
        help="the test file: the output takes its items and order and "
        "is checked against it with the official checks",
    )
    g = parser.add_argument_group("voting (choice tasks)")
    g.add_argument(
        "--method",
        choices=VOTE_METHODS,
        help="hard (default), weighted, soft, dawid_skene (reliability estimated without gold), "
        "or stack (a logistic-regression meta-learner fitted on --gold)",
    )
    g.add_argument(
        "--weights",
        nargs="+",
        type=float,
        metavar="W",
        help="one weight per input, in input order (default with --gold: dev accuracy)",
    )
    g.add_argument(
        "--priority", nargs="+", metavar="NAME", help="every model, most trusted first: the last tie-break"
    )
    g.add_argument(
        "--calibrate",
        action="store_true",
        help="soft voting: fit a temperature per model on dev (minimum NLL) first",
    )
    g = parser.add_argument_group("dev evaluation and ensemble selection")
    g.add_argument(
        "--gold",
        help="a file with gold outputs (dev): report per model, ensemble, "
        "oracle; needed by --calibrate and --select",
    )
    g.add_argument(
        "--dev-results",
        nargs="+",
        metavar="FILE",
        help="the same models' predictions on --gold (matched by file name), when "
        "the inputs are test predictions",
    )
    g.add_argument(
        "--select",
        metavar="FILE",
        help="greedy ensemble selection on dev (Caruana); write members and weights "
        "to FILE and vote with them",
    )
    g.add_argument("--members", metavar="FILE", help="vote with the members of a --select file")
    g.add_argument("--rounds", type=int, default=25, help="selection rounds (default 25)")
    g.add_argument(
        "--init",
        type=int,
        default=0,
        help="selection starts from the N best single models (default 0: the best "
        "prefix of the models ranked by dev accuracy)",
    )
    g.add_argument(
        "--folds",
        type=int,
        default=5,
        help="cross-validation folds of --select and --method stack (default 5)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the fold split")
    g = parser.add_argument_group("summaries (generate tasks)")
    g.add_argument(
        "--bertscore-model",
        metavar="PATH",
        help="MBR by BERTScore F1 with this model (e.g. a local "
        "bert-base-multilingual-cased) instead of ROUGE-1",
    )
    parser.add_argument(
        "--rules",
        metavar="EDITION",
        help="competition rules to follow, e.g. 2025: refuses to combine models "
        "where they allow no ensembles",
    )
    parser.add_argument(
        "--report", metavar="FILE", help="write everything (ties, winners per id, diagnostics) as JSON"
    )
    verbose_argument(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.init < 0 or args.folds < 2:
        raise UserError("--rounds must be >= 1, --init >= 0 and --folds >= 2", field="rounds")
    if args.select and (args.members or args.weights):
        raise UserError(
            "--select chooses the members and weights itself; --members and --weights go in a separate run",
            field="select",
        )
    if args.rules and (args.output or args.select or args.members):
        check_ensemble(get_rules(args.rules), len(args.inputs))
    job = VoteJob(
        inputs=args.inputs,
        output=args.output,
        task=args.task,
        method=args.method,
        weights=args.weights,
        priority=args.priority,
        gold=args.gold,
        dev_results=args.dev_results,
        calibrate=args.calibrate,
        select=args.select,
        members=args.members,
        rounds=args.rounds,
        init=args.init,
        folds=args.folds,
        seed=args.seed,
        test=args.test,
        bertscore_model=args.bertscore_model,
        report=args.report,
        overwrite=args.overwrite,
    )
    run_vote(job)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
