"""Live chat with a character (``run/chat.py``): the session, its memory, the reply.

session    settings, turns, summary and buffer; saved after every turn, resumable
summarize  the summarisers that fold old turns into the running summary
memory     none / window / summary_buffer, and the prompt within the token budget
reply      the character's reply, streamed as it is written
loop       one conversation: lines in (keyboard or file, the same path), commands
"""

from __future__ import annotations

from malpyeong.dialogue.history import Memory, Prompt
from malpyeong.dialogue.loop import COMMANDS, Chat, read_lines
from malpyeong.dialogue.reply import ReplyStreamer, generate_reply
from malpyeong.dialogue.session import (
    MEMORIES,
    ChatSettings,
    Session,
    check_resume,
    load_session,
    script_record,
    script_start,
)
from malpyeong.dialogue.summarize import (
    ExtractiveSummarizer,
    ModelSummarizer,
    TaskSummarizer,
    make_summarizer,
    truncate_tokens,
)

__all__ = [
    "COMMANDS",
    "MEMORIES",
    "Chat",
    "ChatSettings",
    "ExtractiveSummarizer",
    "Memory",
    "ModelSummarizer",
    "Prompt",
    "ReplyStreamer",
    "Session",
    "TaskSummarizer",
    "check_resume",
    "generate_reply",
    "load_session",
    "make_summarizer",
    "read_lines",
    "script_record",
    "script_start",
    "truncate_tokens",
]
