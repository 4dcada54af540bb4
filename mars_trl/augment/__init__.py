"""Label-preserving augmentation of preference pairs for MARS.

An augmenter turns a batch of preference pairs (any of TRL's four dataset formats) into up to `k` variants per pair:

- [`PerturbationAugmenter`]: model-free, seeded surface edits (free on the prompt, symmetric on the responses).
- [`ParaphraseAugmenter`]: the MARS authors' paraphrase crossing (5 x 5 = 25 variants per pair).
- [`LMParaphraseAugmenter`]: the same crossing from any chat LM (e.g. an offline GGUF), sampled and seeded, behind a
  [`MeaningFilter`] that drops paraphrases whose embedding strays from their source.
- any function `fn(pairs, k) -> list[list[dict]]`, through [`as_augmenter`] / [`CallableAugmenter`].

Check what an augmenter returns with [`validate_variants`] before training on it.

Example:

```python
>>> from mars_trl.augment import PerturbationAugmenter, validate_variants
>>> pair = {"prompt": "Is the sky blue?", "chosen": "Yes, it is.", "rejected": "No."}
>>> variants = PerturbationAugmenter(seed=0)([pair], k=2)[0]
>>> ok, problems = validate_variants(pair, variants, k=2)
>>> len(ok), problems
(2, [])
```
"""

from .base import Augmenter, CallableAugmenter, as_augmenter
from .lm_paraphrase import LMParaphraseAugmenter, MeaningFilter
from .paraphrase import ParaphraseAugmenter
from .perturbation import PerturbationAugmenter
from .variants import validate_variants

__all__ = [
    "Augmenter",
    "CallableAugmenter",
    "LMParaphraseAugmenter",
    "MeaningFilter",
    "ParaphraseAugmenter",
    "PerturbationAugmenter",
    "as_augmenter",
    "validate_variants",
]
