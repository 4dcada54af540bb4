"""Every name the package shares between modules, in one place: dataset columns, pair fields, strategy names and the
default embedder. Import them from here; nothing else defines them."""

#: The text columns of a preference pair (TRL's formats): the prompt is optional (implicit in chosen/rejected).
TEXT_COLUMNS = ("prompt", "chosen", "rejected")
#: The token columns RewardTrainer's preparation writes.
TOKEN_COLUMNS = ("chosen_ids", "rejected_ids")
#: TRL's deprecated names of the pre-tokenized columns; RewardTrainer renames them (with a FutureWarning).
LEGACY_TOKEN_COLUMNS = ("chosen_input_ids", "rejected_input_ids")
#: TRL's optional per-pair target margin: RewardTrainer's loss is -log sigma(r_chosen - r_rejected - margin).
LOSS_MARGIN = "margin"
#: Metadata columns `load_preference_dataset` keeps beside the text columns when present.
METADATA_COLUMNS = ("id", "dataset", "label_source", "meta")

#: Column that carries each training pair's position through the collator, so a training step knows which pairs
#: it scored. Deliberately not `margin`: TRL subtracts a `margin` column inside the loss.
INDEX_COLUMN = "mars_index"
#: Column that remembers each labelled pair's row in the dataset as given, whose text the augmenter rewrites.
RAW_ROW_COLUMN = "mars_row"
#: Provenance columns of an augmented pair: its labelled source pair, its round, its variant number.
SOURCE, ROUND, VARIANT = "mars_source", "mars_round", "mars_variant"
#: Column that carries an evaluation pair's row through scoring.
ROW_COLUMN = "eval_row"

#: Budget-allocation strategies of an augmentation round (`MarsArguments.augment_strategy`).
AUGMENT_STRATEGIES = ("none", "uniform", "west_of_n", "mars")
#: The MARS authors' sentence embedder (`MarsArguments.semantic_embedder`'s default).
DEFAULT_EMBEDDER = "sentence-transformers/all-mpnet-base-v2"
