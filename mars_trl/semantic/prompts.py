"""What a rewriter is asked: [`RewriteRequest`] and the chat messages of the authors' rewrite prompts."""

from __future__ import annotations

from dataclasses import dataclass

REJECTED_INSTRUCTION = (
    "You are editing a preference pair used to train a reward model. The two responses below answer the same prompt "
    "but mean nearly the same thing, so the pair teaches little. Rewrite the WORSE response so that its meaning "
    "differs more clearly from the better response while it stays clearly worse than the better response. Keep it a "
    "plausible answer to the same prompt, in the same language. Do not add unsafe, harmful or offensive content. "
    "Return only the rewritten response, with no preamble, label or explanation."
)


CHOSEN_INSTRUCTION = (
    "You are editing a preference pair used to train a reward model. The two responses below answer the same prompt "
    "but mean nearly the same thing, so the pair teaches little. Rewrite the BETTER response so that it is clearly "
    "better than the worse response (more correct, helpful and complete) and its meaning differs more clearly from "
    "it. Keep it a plausible answer to the same prompt, in the same language. Do not add unsafe, harmful or offensive "
    "content. Return only the rewritten response, with no preamble, label or explanation."
)


#: The section labels of a rewrite request's body.
BETTER_LABEL = "Better response"
WORSE_LABEL = "Worse response"
REWRITE_MARK = "rewrite this one"

#: What a rewrite must not repeat unless its original has it: the model echoing the request (a weak rewriter's usual
#: failure) instead of answering it. The sharpener discards such a rewrite.
ECHO_MARKS = (BETTER_LABEL.lower(), WORSE_LABEL.lower(), "rewrite this")


@dataclass(frozen=True)
class RewriteRequest:
    """One rewrite: `response` is the `side` ("rejected" or "chosen") to rewrite, `other` the pair's other response."""

    side: str
    response: str
    other: str
    prompt: str = ""


def rewrite_messages(request: RewriteRequest) -> list[dict]:
    r"""
    The chat messages sent to a rewriter for `request`: one user message with the instructions (keep the rejected
    response worse, or make the chosen one better; plausible for the same prompt; no unsafe content; return only the
    response), the prompt and both responses.

    Example:

    ```python
    >>> from mars_trl.semantic import RewriteRequest, rewrite_messages
    >>> message = rewrite_messages(RewriteRequest("rejected", "It is 5.", "It is 4.", "2+2?"))[0]
    >>> message["role"], "Rewrite the WORSE response" in message["content"]
    ('user', True)
    >>> print(message["content"].split("\n\n", 1)[1])
    Prompt:
    2+2?
    <BLANKLINE>
    Better response:
    It is 4.
    <BLANKLINE>
    Worse response (rewrite this one):
    It is 5.
    ```
    """
    if request.side == "rejected":
        instruction = REJECTED_INSTRUCTION
        body = f"{BETTER_LABEL}:\n{request.other}\n\n{WORSE_LABEL} ({REWRITE_MARK}):\n{request.response}"
    elif request.side == "chosen":
        instruction = CHOSEN_INSTRUCTION
        body = f"{BETTER_LABEL} ({REWRITE_MARK}):\n{request.response}\n\n{WORSE_LABEL}:\n{request.other}"
    else:
        raise ValueError(f"side must be 'rejected' or 'chosen', got {request.side!r}")
    prompt = f"Prompt:\n{request.prompt}\n\n" if request.prompt.strip() else ""
    return [{"role": "user", "content": f"{instruction}\n\n{prompt}{body}"}]


def echoes_request(rewrite: str, original: str) -> bool:
    """
    Whether `rewrite` repeats a label of the request's body ("better response", "worse response", "rewrite this")
    that `original` does not contain, case-insensitively: the rewriter echoed its instructions instead of answering.

    >>> from mars_trl.semantic.prompts import echoes_request
    >>> echoes_request("The Wider response will be clearer than the Better response.", "I am fine.")
    True
    >>> echoes_request("Which is the better response? Neither.", "Which is the better response?")
    False
    """
    rewrite, original = rewrite.lower(), original.lower()
    return any(mark in rewrite and mark not in original for mark in ECHO_MARKS)
