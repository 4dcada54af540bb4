"""Model-free, label-preserving surface perturbations of preference pairs.

Design principle
----------------
A Bradley-Terry reward model learns from the difference r(x, y+) - r(x, y-). An augmented pair is only useful if
its label is still right: y+ must still be the better answer to x. Two kinds of edits keep that guarantee:

* **Prompt edits are free.** The prompt (its last user turn; system messages and earlier turns are kept) is shared
  by both responses, so any edit that keeps the request's meaning (a polite lead-in such as "Please respond to the
  following:", the case of the first letter, the final punctuation, contracting/expanding "do not"/"don't",
  whitespace) changes the context identically for chosen and rejected. The same answers are still right or wrong
  for it. Edits that could change the request are not made: "?" is only dropped when the sentence is a question by
  its wording ("What ...", "Can ..."), never from "You are coming?".
* **Response edits are symmetric.** Chosen and rejected go through the *same* meaning-preserving function T (the
  same contraction rule, the same whitespace/typography normalisation, the same markdown bullet style, the same
  neutral lead-in like "Answer:"), so whatever T adds or removes, it does to both sides, and the content that made
  y+ better than y- is untouched. An edit applied to one side only (word dropout, typos, truncation) could make the
  chosen answer worse than the rejected one and silently flip the label, so this module never makes one.

Guards keep the edits meaning-preserving in the places where surface form *is* the content:

* code (fenced blocks and `inline code`) is never edited: a changed string literal or indentation changes a program;
* only unambiguous contractions are handled ("it's" may be "it is" or "it has", so it is left alone), and
  pronoun contractions ("you are" -> "you're") only before a following word ("who you are." stays);
* when the prompt carries a format constraint (JSON, "exactly", "only", "start with", "contractions", bullets, ...)
  the responses only get whitespace and typography normalisation: a lead-in or a contraction could break the very
  constraint that decides which answer is better;
* with an implicit standard prompt the prompt/response boundary is a guess (the shared text prefix), so no response
  lead-in and no end-of-prompt punctuation is added there: both could land mid-sentence.

Each variant combines a few of these edits. Which ones is drawn from the pair's own RNG, derived with hashlib from
the seed and the pair's text (and the variant index), so the output is deterministic, independent of the batch the
pair arrives in and of Python's hash randomisation, and `augment(pairs, 5)` is a prefix of `augment(pairs, 25)`.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator

from ..data.fields import layout_fields, pair_core, pair_key, pair_layout, primary_fields, with_texts
from .base import Augmenter

PROMPT_LEAD_INS = (
    "Please respond to the following:",
    "Here is my request:",
    "I need help with this:",
    "Please help with the following:",
    "Request:",
    "Hi!",
    "Hello.",
    "Could you help me with this?",
)
RESPONSE_LEAD_INS = ("Answer:", "Response:", "Reply:", "Here is my response:")

_QUESTION_WORDS = frozenset(
    "what why how when where who whom whose which is are am was were can could would should will shall do does did "
    "has have had may might must".split()
)
# Prompts that pin down the form of the answer: lead-ins, contractions or bullet swaps could break the constraint.
_CONSTRAINT_HINTS = re.compile(
    r"\b(json|yaml|xml|csv|html|markdown|format\w*|exact\w*|only|verbatim|contractions?|bullet\w*|"
    r"(?:start|begin|end|finish)(?:s|ing)? (?:with|by)|one word|single word|all caps|capital\w*|lower ?case|"
    r"upper ?case|quot\w*|repeat\w*|at least|at most|no more than|fewer than|less than|under \d+|words? long|"
    r"first word|last word|characters?|letters?|punctuation|commas?|placeholder\w*|highlight\w*|postscript)\b",
    re.IGNORECASE,
)
_CODE = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]+`", re.DOTALL)
_STRUCTURED_START = re.compile(r"(?:```|~~~|#|\||>|[-*+] |\d+[.)] |[{\[<])")
_SPEAKER_TAG = re.compile(r"(?:^|\n)[ \t]*(?:Human|User|Question|Q)[ \t]*:[ \t]*", re.IGNORECASE)
_HORIZONTAL_RULE = re.compile(r"[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*")
_BULLET = re.compile(r"([ \t]*)([-*])( +)(?=\S)")

_EXPANSIONS = {
    "don't": "do not",
    "doesn't": "does not",
    "didn't": "did not",
    "can't": "cannot",
    "won't": "will not",
    "isn't": "is not",
    "aren't": "are not",
    "wasn't": "was not",
    "weren't": "were not",
    "haven't": "have not",
    "hasn't": "has not",
    "hadn't": "had not",
    "wouldn't": "would not",
    "shouldn't": "should not",
    "couldn't": "could not",
    "mustn't": "must not",
    "i'm": "i am",
    "you're": "you are",
    "we're": "we are",
    "they're": "they are",
    "i've": "i have",
    "you've": "you have",
    "we've": "we have",
    "they've": "they have",
    "i'll": "i will",
    "you'll": "you will",
    "we'll": "we will",
    "they'll": "they will",
    "let's": "let us",
}
# Negations contract safely anywhere; pronoun + verb only before another word ("you're right", not "who you're.").
# "have" is left out: "I've a dog" is not idiomatic everywhere.
_NEGATIONS = {
    "do not": "don't",
    "does not": "doesn't",
    "did not": "didn't",
    "cannot": "can't",
    "will not": "won't",
    "is not": "isn't",
    "are not": "aren't",
    "was not": "wasn't",
    "were not": "weren't",
    "have not": "haven't",
    "has not": "hasn't",
    "had not": "hadn't",
    "would not": "wouldn't",
    "should not": "shouldn't",
    "could not": "couldn't",
}
_PRONOUNS = {
    "i am": "i'm",
    "you are": "you're",
    "we are": "we're",
    "they are": "they're",
    "i will": "i'll",
    "you will": "you'll",
    "we will": "we'll",
    "they will": "they'll",
}


def _alternation(words) -> str:
    return "|".join(
        re.escape(w).replace("'", "['’]").replace(r"\ ", " ") for w in sorted(words, key=len, reverse=True)
    )


_EXPAND_RE = re.compile(rf"(?<![\w'’])(?:{_alternation(_EXPANSIONS)})(?![\w'’])", re.IGNORECASE)
_CONTRACT_RE = re.compile(
    rf"(?<![\w'’])(?:(?:{_alternation(_PRONOUNS)})(?= [^\W\d_])|(?:{_alternation(_NEGATIONS)})(?![\w'’]))",
    re.IGNORECASE,
)
_TYPOGRAPHY_CHARS = re.compile("[‘’‚“”„–—…\u00a0]")
_TYPOGRAPHY = str.maketrans(
    {"‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "–": "-", "—": "--", "…": "...", "\u00a0": " "}
)


def _match_case(source: str, replacement: str) -> str:
    letters = [c for c in source if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return replacement.upper()
    if source[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _outside_code(fn: Callable[[str], str], text: str) -> str:
    parts, last = [], 0
    for match in _CODE.finditer(text):
        parts += [fn(text[last : match.start()]), match.group(0)]
        last = match.end()
    parts.append(fn(text[last:]))
    return "".join(parts)


def expand_contractions(text: str) -> str:
    """`"don't"` -> `"do not"`, `"I'm"` -> `"I am"`, ... outside code; ambiguous ones (`"it's"`) stay.

    >>> from mars_trl.augment.perturbation import expand_contractions
    >>> print(expand_contractions("I'm sure you DON'T mind `can't`."))
    I am sure you DO NOT mind `can't`.
    """

    if "'" not in text and "’" not in text:
        return text

    def expand(segment: str) -> str:
        return _EXPAND_RE.sub(
            lambda m: _match_case(m.group(0), _EXPANSIONS[m.group(0).lower().replace("’", "'")]), segment
        )

    return _outside_code(expand, text)


def contract_contractions(text: str) -> str:
    """`"do not"` -> `"don't"`, `"you are right"` -> `"you're right"`, ... outside code.

    >>> from mars_trl.augment.perturbation import contract_contractions
    >>> print(contract_contractions("You are right, I do not know who you are."))
    You're right, I don't know who you are.
    """
    apostrophe = "’" if "’" in text and "'" not in text else "'"

    def contract(segment: str) -> str:
        def repl(m: re.Match) -> str:
            key = m.group(0).lower()
            return _match_case(m.group(0), (_NEGATIONS.get(key) or _PRONOUNS[key]).replace("'", apostrophe))

        return _CONTRACT_RE.sub(repl, segment)

    return _outside_code(contract, text)


def normalize_whitespace(text: str) -> str:
    """CRLF -> LF, runs of inner spaces -> one space, no spaces before a newline, at most one blank line; indentation,
    code and the text's two ends are kept.

    >>> from mars_trl.augment.perturbation import normalize_whitespace
    >>> normalize_whitespace("a  b \\r\\n\\n\\n\\n  c")
    'a b\\n\\n  c'
    """

    def normalize(segment: str) -> str:
        segment = re.sub(r"(?<=\S) {2,}(?=\S)", " ", segment)
        segment = re.sub(r"[ \t]+(?=\n)", "", segment)
        return re.sub(r"\n{3,}", "\n\n", segment)

    return _outside_code(normalize, text.replace("\r\n", "\n"))


def normalize_typography(text: str) -> str:
    """Curly quotes, dashes, ellipsis and non-breaking spaces -> ASCII, outside code.

    >>> from mars_trl.augment.perturbation import normalize_typography
    >>> print(normalize_typography("“Hi” — it’s…"))
    "Hi" -- it's...
    """
    if _TYPOGRAPHY_CHARS.search(text) is None:
        return text
    return _outside_code(lambda segment: segment.translate(_TYPOGRAPHY), text)


def swap_bullets(text: str) -> str:
    """Markdown bullets `- item` <-> `* item` outside fenced code; horizontal rules stay.

    >>> from mars_trl.augment.perturbation import swap_bullets
    >>> swap_bullets("- a\\n* b")
    '* a\\n- b'
    """
    lines, in_code = text.split("\n"), False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
        elif not in_code and not _HORIZONTAL_RULE.fullmatch(line):
            lines[i] = _BULLET.sub(lambda m: m.group(1) + ("*" if m.group(2) == "-" else "-") + m.group(3), line, 1)
    return "\n".join(lines)


def _add_lead_in(text: str, phrase: str, sep: str = " ", after_speaker_tag: bool = False) -> str:
    start = 0
    if after_speaker_tag:
        # "\n\nHuman: ..." style prompts: the lead-in belongs to the last human turn, not before the transcript.
        tags = list(_SPEAKER_TAG.finditer(text))
        if tags:
            start = tags[-1].end()
    head, body = text[:start], text[start:]
    stripped = body.lstrip()
    if not stripped.strip() or stripped.lower().startswith(phrase.lower()):
        return text
    if _STRUCTURED_START.match(stripped):
        sep = "\n"  # a fence, heading, table or list only works at the start of a line
    return head + body[: len(body) - len(stripped)] + phrase + sep + stripped


def _toggle_first_letter(text: str) -> str:
    stripped = text.lstrip()
    match = re.match(r"[^\W\d_]+", stripped)
    if match is None or match.group(0) == "I" or stripped[match.end() : match.end() + 1] == ":":
        return text  # pronoun "I" and speaker tags ("Human:") keep their case
    word = match.group(0)
    if word[0].isupper() and (len(word) == 1 or word[1:].islower()):
        new = word[0].lower() + word[1:]
    elif word.islower():
        new = word[0].upper() + word[1:]
    else:
        return text  # acronyms and mixed case (NASA, iPhone) are names, not sentence case
    return text[: len(text) - len(stripped)] + new + stripped[len(word) :]


def _toggle_end_punctuation(text: str) -> str:
    body = text.rstrip()
    tail = text[len(body) :]
    if len(body) < 2 or "\n" in body:
        return text  # multi-line prompts often end in code or data
    first = re.match(r"\W*(\w+)", body)
    is_question = first is not None and first.group(1).lower() in _QUESTION_WORDS
    last = body[-1]
    if last in ".!?" and body[-2].isalnum():
        if last == "?" and not is_question:
            return text  # "You are coming?" is a question only because of the "?"
        if "." in body[:-1].split()[-1]:
            return text  # "e.g." or "U.S." end in an abbreviation, not a sentence stop
        return body[:-1] + tail
    if last.isalnum():
        return body + ("?" if is_question else ".") + tail
    return text


def _digest(*parts: object) -> int:
    data = "\x1f".join(str(part) for part in parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


Option = tuple[str, Callable[[str], str]]


class PerturbationAugmenter(Augmenter):
    r"""
    Label-preserving surface perturbations; needs no model and is deterministic for a given `seed`.

    The prompt (its last user turn) gets free meaning-preserving edits; chosen and rejected get the *same*
    meaning-preserving edit (see the module docstring for why this keeps the label). Each variant is a distinct
    combination of edits; a pair with few applicable edits yields fewer variants rather than duplicates, and a
    variant never equals the original pair or has chosen == rejected.

    Args:
        seed: seeds every pair's RNG together with the pair's text.
        variants_per_pair: pool size per pair; `augment(pairs, k)` returns at most `min(k, variants_per_pair)`.
        prompt_lead_ins: polite/instruction phrases that may be put before the prompt.
        response_lead_ins: neutral phrases that may be put before both responses; `()` turns these off.
        max_draws: how many edit combinations to try per requested variant before giving up on a pair.

    Example:

    ```python
    >>> from mars_trl.augment import PerturbationAugmenter
    >>> augmenter = PerturbationAugmenter(seed=0)
    >>> pair = {"prompt": "What is 2+2?", "chosen": "It's 4, I don't doubt it.", "rejected": "I don't know.", "id": 1}
    >>> variants = augmenter([pair], k=3)[0]
    >>> len(variants), sorted(variants[0])
    (3, ['chosen', 'prompt', 'rejected'])
    >>> variants == augmenter([pair], k=3)[0]
    True
    ```
    """

    name = "perturbation"

    def __init__(
        self,
        seed: int = 0,
        variants_per_pair: int = 25,
        prompt_lead_ins: tuple[str, ...] = PROMPT_LEAD_INS,
        response_lead_ins: tuple[str, ...] = RESPONSE_LEAD_INS,
        max_draws: int = 8,
    ):
        if variants_per_pair < 1:
            raise ValueError(f"variants_per_pair must be >= 1, got {variants_per_pair}")
        self.seed = int(seed)
        self.variants_per_pair = int(variants_per_pair)
        self.prompt_lead_ins = tuple(prompt_lead_ins)
        self.response_lead_ins = tuple(response_lead_ins)
        self.max_draws = max(1, int(max_draws))

    def __repr__(self) -> str:
        return f"PerturbationAugmenter(seed={self.seed}, variants_per_pair={self.variants_per_pair})"

    def augment(self, pairs: list[dict], k: int) -> list[list[dict]]:
        out = []
        for i, pair in enumerate(pairs):
            try:
                out.append([variant for variant, _ in self.variants_with_recipes(pair, k)])
            except (TypeError, ValueError) as err:
                if hasattr(err, "add_note"):
                    err.add_note(f"while augmenting pair {i} of the batch")
                raise
        return out

    def variants_with_recipes(self, pair: dict, k: int) -> list[tuple[dict, list[str]]]:
        """
        The variants of one pair, each with the names of the edits that made it. Useful to see what the augmenter
        does; [`~PerturbationAugmenter.augment`] returns the same variants without the recipes.

        Example:

        ```python
        >>> from mars_trl.augment import PerturbationAugmenter
        >>> pair = {"prompt": "Why?", "chosen": "Because I'm sure.", "rejected": "Dunno."}
        >>> variant, recipe = PerturbationAugmenter(seed=0).variants_with_recipes(pair, k=2)[1]
        >>> variant["prompt"], variant["chosen"], variant["rejected"]
        ('Here is my request: Why?', 'Response: Because I am sure.', 'Response: Dunno.')
        >>> recipe
        ["prompt: lead-in 'Here is my request:'", 'responses: expand contractions', "responses: lead-in 'Response:'"]
        ```
        """
        limit = min(int(k), self.variants_per_pair)
        if limit <= 0:
            return []
        layout = pair_layout(pair)
        fields = layout_fields(pair, layout)
        texts = {path: text for path, text, _ in fields}
        primaries = primary_fields(pair)
        prompt_path = next((path for path in primaries if path[0] == "prompt"), None)
        sides = {side: [path for path in primaries if path[0] == side] for side in ("chosen", "rejected")}
        if not all(any(texts[path].strip() for path in paths) for paths in sides.values()):
            return []  # an empty response stays empty: no usable variant
        response_texts = [texts[path] for paths in sides.values() for path in paths]
        implicit_text = not layout.conversational and not layout.explicit
        prompt_text = " ".join(text for path, text, _ in fields if path[0] == "prompt")
        constrained = bool(_CONSTRAINT_HINTS.search(prompt_text or " ".join(response_texts)))

        memo: dict = {}
        prompt_factors: list[list[Option]] = []
        if prompt_path is not None and texts[prompt_path].strip():
            prompt_factors = self._prompt_factors(texts[prompt_path], not implicit_text, memo)
        response_factors = self._response_factors(
            response_texts,
            wording=not constrained,
            lead_in=not constrained and not (implicit_text and layout.shared),
            memo=memo,
        )
        n_prompt = len(prompt_factors)
        factors = prompt_factors + response_factors
        sizes = [len(options) + 1 for options in factors]  # + 1: the factor's "no edit" choice
        total = 1
        for size in sizes:
            total *= size
        if total <= 1:
            return []

        original = pair_core(pair)
        seen = {pair_key(original)}
        prompt_cache: dict[tuple, str] = {}
        response_cache: dict[tuple, dict] = {}
        out: list[tuple[dict, list[str]]] = []
        base = _digest(self.seed, pair_key(pair))
        for index in self._candidates(base, total, limit):
            choices, rest = [], index
            for size in sizes:
                choices.append(rest % size)
                rest //= size
            new_texts, recipe = {}, []
            if prompt_path is not None and n_prompt:
                key = tuple(choices[:n_prompt])
                if key not in prompt_cache:
                    prompt_cache[key] = _compose(prompt_factors, key, texts[prompt_path], memo)
                new_texts[prompt_path] = prompt_cache[key]
                recipe += [f"prompt: {prompt_factors[i][c - 1][0]}" for i, c in enumerate(key) if c]
            key = tuple(choices[n_prompt:])
            if key not in response_cache:
                response_cache[key] = {
                    path: _compose(response_factors, key, texts[path], memo, first=paths.index(path) == 0)
                    for paths in sides.values()
                    for path in paths
                }
            new_texts.update(response_cache[key])
            recipe += [f"responses: {response_factors[i][c - 1][0]}" for i, c in enumerate(key) if c]
            variant = with_texts(pair, new_texts)
            signature = pair_key(variant)
            if signature in seen or variant["chosen"] == variant["rejected"]:
                continue  # edits that cancel out, or merge two answers that differed only in surface form
            seen.add(signature)
            out.append((variant, recipe))
            if len(out) >= limit:
                break
        return out

    def _candidates(self, base: int, total: int, limit: int) -> Iterator[int]:
        """Combination indices in 1..total-1 (0 is "no edit at all"), without repeats, in a seeded order."""
        if total - 1 <= 256:
            # Small space: a seeded permutation lists every combination once, so all distinct variants are found.
            order = list(range(1, total))
            random.Random(base).shuffle(order)
            yield from order
            return
        used: set[int] = set()
        # Large space: attempt i draws from its own RNG, so attempt i does not depend on k.
        for attempt in range(limit * self.max_draws):
            rng = random.Random(_digest(base, attempt))
            for _ in range(self.max_draws):
                index = rng.randrange(1, total)
                if index not in used:
                    used.add(index)
                    yield index
                    break

    def _prompt_factors(self, text: str, end_punctuation: bool, memo: dict) -> list[list[Option]]:
        candidates: list[list[Option]] = [
            [("expand contractions", expand_contractions), ("contract contractions", contract_contractions)],
            [("normalize whitespace", normalize_whitespace)],
            [("toggle first-letter case", _toggle_first_letter)],
            [("toggle end punctuation", _toggle_end_punctuation)] if end_punctuation else [],
            [
                (
                    f"lead-in {phrase!r}{' + newline' if sep == chr(10) else ''}",
                    lambda t, p=phrase, s=sep: _add_lead_in(t, p, s, after_speaker_tag=True),
                )
                for phrase in self.prompt_lead_ins
                for sep in (" ", "\n")
            ],
        ]
        return _effective(candidates, [text], memo)

    def _response_factors(self, texts: list[str], wording: bool, lead_in: bool, memo: dict) -> list[list[Option]]:
        candidates: list[list[Option]] = [
            [("normalize typography", normalize_typography)],
            [("normalize whitespace", normalize_whitespace)],
            [("expand contractions", expand_contractions), ("contract contractions", contract_contractions)]
            if wording
            else [],
            [("swap bullet markers", swap_bullets)] if wording else [],
            [(f"lead-in {phrase!r}", _LeadIn(phrase)) for phrase in self.response_lead_ins] if lead_in else [],
        ]
        return _effective(candidates, texts, memo)


class _LeadIn:
    """A response lead-in: applied to the first field of each side only (one "Answer:" per response)."""

    first_only = True

    def __init__(self, phrase: str):
        self.phrase = phrase

    def __call__(self, text: str) -> str:
        return _add_lead_in(text, self.phrase)


def _effective(candidates: list[list[Option]], texts: list[str], memo: dict) -> list[list[Option]]:
    """Drop options that change none of `texts`, and factors left with no option."""
    factors = []
    for options in candidates:
        kept = [(name, fn) for name, fn in options if any(_safe(fn, text, memo) != text for text in texts)]
        if kept:
            factors.append(kept)
    return factors


def _safe(fn: Callable[[str], str], text: str, memo: dict) -> str:
    # The memo (one per pair) holds each single edit's result: variants share most of their edits.
    key = (id(fn), text)
    if key not in memo:
        new = fn(text)
        memo[key] = text if (text.strip() and not new.strip()) else new  # an edit never blanks a text
    return memo[key]


def _compose(factors: list[list[Option]], choices: tuple, text: str, memo: dict, first: bool = True) -> str:
    for options, choice in zip(factors, choices):
        if choice:
            fn = options[choice - 1][1]
            if first or not getattr(fn, "first_only", False):
                text = _safe(fn, text, memo)
    return text
