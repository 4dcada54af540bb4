"""Which pairs a batch draws: margins, the margin-aware sampler, the augmentation budget's allocation, and scoring.

- `margins`: the margin table, sampling weights and their statistics.
- `sampler`: [`MarginAwareSampler`], the `torch` sampler the trainer installs.
- `allocation`: how a round's variant budget is spread over the labelled pairs (the strategies).
- `schedule`: the run plan: epoch lengths and each round's budget.
- `scoring`: the margin-scoring pass over tokenized pairs.
"""
