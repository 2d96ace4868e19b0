"""Combining several models' predictions into one submission.

Choice tasks (CCI) are voted; generate tasks (DCS) are combined by minimum-Bayes-risk (MBR)
selection. One job per module:

- :mod:`.inputs`: read and check the results files, name the models, resolve ``--priority``;
- :mod:`.voting`: hard, weighted and soft voting and the tie rule;
- :mod:`.calibration`: temperature scaling of probabilities on dev;
- :mod:`.diagnostics`: dev figures of the models and the ensemble, and their tables;
- :mod:`.selection`: Caruana ensemble selection, its cross-validation, the members file;
- :mod:`.stacking`: the logistic-regression meta-learner fitted on dev, and its cross-validation;
- :mod:`.mbr`: similarities and MBR selection of generated texts;
- :mod:`.job`: ``run_vote``, what ``ensemble/vote.py`` runs.

The names below are the package's public interface; import them from here.
"""

from malpyeong.ensemble.calibration import apply_temperature, fit_temperature, nll
from malpyeong.ensemble.diagnostics import (
    choice_diagnostics,
    format_choice_diagnostics,
    format_generate_diagnostics,
    generate_diagnostics,
)
from malpyeong.ensemble.inputs import (
    check_results,
    infer_task,
    member_names,
    prob_tensor,
    resolve_priority,
    vote_matrix,
)
from malpyeong.ensemble.job import VOTE_METHODS, VoteJob, run_vote
from malpyeong.ensemble.mbr import (
    MbrOutcome,
    bertscore_similarity,
    describe_mbr_ties,
    mbr_choose,
    rouge1_similarity,
)
from malpyeong.ensemble.selection import (
    Selection,
    caruana_select,
    cross_validate_selection,
    expected_accuracy,
    read_members,
    write_members,
)
from malpyeong.ensemble.stacking import (
    StackCV,
    StackModel,
    check_stack_dev,
    cross_validate_stack,
    fit_stack,
    stack_features,
    stack_predict,
    stack_report,
)
from malpyeong.ensemble.voting import (
    METHODS,
    Tie,
    VoteOutcome,
    break_ties,
    describe_ties,
    raise_if_unresolved,
    vote_choices,
)

__all__ = [
    "METHODS",
    "MbrOutcome",
    "Selection",
    "StackCV",
    "StackModel",
    "Tie",
    "VOTE_METHODS",
    "VoteJob",
    "VoteOutcome",
    "apply_temperature",
    "bertscore_similarity",
    "break_ties",
    "caruana_select",
    "check_results",
    "check_stack_dev",
    "choice_diagnostics",
    "cross_validate_selection",
    "cross_validate_stack",
    "describe_mbr_ties",
    "describe_ties",
    "expected_accuracy",
    "fit_stack",
    "fit_temperature",
    "format_choice_diagnostics",
    "format_generate_diagnostics",
    "generate_diagnostics",
    "infer_task",
    "mbr_choose",
    "member_names",
    "nll",
    "prob_tensor",
    "raise_if_unresolved",
    "read_members",
    "resolve_priority",
    "rouge1_similarity",
    "run_vote",
    "stack_features",
    "stack_predict",
    "stack_report",
    "vote_choices",
    "vote_matrix",
    "write_members",
]
