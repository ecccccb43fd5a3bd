"""What a language model on the edge reads: the scene summary's text form, the task's question, lettered options.

A completion prompt, not a chat template: the shipped edge model (Gemma 3 270M) is a base model. The allowed
answers are listed as options A), B), ... and the model answers with the letter. Each letter is one token, so
scoring the options is one next-token distribution: the most likely option is then exactly what
grammar-constrained greedy decoding picks, and no answer can be a prefix of another ("3" of "3+").

The prompt comes in two parts, the frame's (preamble and summary) and the task's (question and options), which a
model evaluates separately: the same frame asked several tasks reuses the first part's cache, and the split is
the same whatever was asked before, so the numbers are too.
"""

from __future__ import annotations

import json

from cepr.data.tasks import TaskParams, get_task

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
PREAMBLE = (
    "A quadruped robot's on-board perception summarised what its camera sees. Each row of objects follows "
    "object_fields; path_m, left_m and right_m are the distances in metres at which the object meets the robot's "
    "path corridor and the bands beside it (null: it does not); free_m is the free distance ahead in those bands."
)


def summary_text(summary) -> str:
    """The summary's compact JSON text form (what a cloud request carries): ``SceneSummary`` or its dict."""
    d = summary if isinstance(summary, dict) else summary.to_dict()
    return json.dumps(d, separators=(",", ":"), allow_nan=False)


def option_letters(n: int) -> str:
    if n > len(OPTION_LETTERS):
        raise ValueError(f"{n} answers: at most {len(OPTION_LETTERS)} can be lettered")
    return OPTION_LETTERS[:n]


def frame_prompt(summary) -> str:
    """The frame's part of the prompt: the same for every task asked about the frame."""
    return f"{PREAMBLE}\nScene summary: {summary_text(summary)}\n"


def task_prompt(task: str, params: TaskParams | None = None) -> str:
    """The task's part: the question and the lettered options, ending where the letter is to follow."""
    t = get_task(task)
    options = " ".join(f"{c}) {a}" for c, a in zip(option_letters(len(t.answers)), t.answers))
    return f"Question: {t.render_prompt(params)}\nOptions: {options}\nAnswer (the option's letter):"


def option_continuation(letter: str) -> str:
    """The text scored (and generated) after the prompt for an option."""
    return f" {letter}"
