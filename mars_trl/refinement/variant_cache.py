"""[`VariantCache`]: each labelled pair's generated variants, generated once and reused by every later round; saved
in checkpoints as JSONL."""

from __future__ import annotations

import json


class VariantCache:
    """
    Generated variants of each labelled pair (raw rows in the dataset's own format), generated once and reused by
    every later round.
    """

    def __init__(self):
        self.variants: dict[int, list[dict]] = {}

    def __contains__(self, source: int) -> bool:
        return source in self.variants

    def __getitem__(self, source: int) -> list[dict]:
        return self.variants[source]

    def __len__(self) -> int:
        return len(self.variants)

    def add(self, source: int, variants: list[dict]) -> None:
        self.variants[int(source)] = list(variants)

    def to_jsonl(self) -> bytes:
        lines = [
            json.dumps({"source": s, "variants": v}, ensure_ascii=False, separators=(",", ":"))
            for s, v in sorted(self.variants.items())
        ]
        return ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8")

    def load_jsonl(self, data: bytes) -> None:
        self.variants = {}
        for line in data.decode("utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                self.variants[int(record["source"])] = record["variants"]
