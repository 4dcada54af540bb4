"""The package's layout holds: modules talk through public names, each shared constant has one home, and the old
import paths (before the package was grouped by job) still work for one release, with a warning."""

import ast
import importlib
import pathlib
import pickle
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "mars_trl"


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_imports_a_private_name_from_another():
    offences = []
    for path, tree in modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                continue
            inside = node.level > 0 or (node.module or "").split(".")[0] == "mars_trl"
            if not inside:
                continue
            parts = (node.module or "").split(".")
            names = [alias.name for alias in node.names]
            if any(is_private(p) for p in parts) or any(is_private(n) for n in names):
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert offences == []


def test_only_the_trainer_touches_its_mars_state():
    offences = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        for path, tree in modules()
        if path.name != "trainer.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_mars_")
    ]
    assert offences == []


def test_each_shared_constant_has_one_home():
    names = importlib.import_module("mars_trl.names")
    shared = {n for n in vars(names) if n.isupper()}
    homes = {}
    for path, tree in modules():
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for target in targets:
                for leaf in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(leaf, ast.Name) and leaf.id in shared:
                        homes.setdefault(leaf.id, []).append(str(path.relative_to(PACKAGE)))
    assert homes == {name: ["names.py"] for name in shared}


# Old path -> (where its names live now, some of its names).
OLD_MODULES = {
    "mars_trl.margins": ("mars_trl.sampling.margins", ["MarginTable", "sampling_weights"]),
    "mars_trl.sampler": ("mars_trl.sampling.sampler", ["MarginAwareSampler"]),
    "mars_trl.allocation": ("mars_trl.sampling.allocation", ["allocate", "largest_remainder"]),
    "mars_trl.scoring": ("mars_trl.sampling.scoring", ["score_margins"]),
    "mars_trl.schedule": ("mars_trl.sampling.schedule", ["plan_run"]),
    "mars_trl.callback": ("mars_trl.refinement.callback", ["MarsCallback"]),
    "mars_trl.state": ("mars_trl.refinement.checkpoint", ["MarsStateError", "save_state"]),
    "mars_trl.report": ("mars_trl.refinement.report", ["save_report"]),
    "mars_trl.loading": ("mars_trl.data.loading", ["load_preference_dataset"]),
    "mars_trl.validation": ("mars_trl.data.validation", ["DataError"]),
    "mars_trl.preparation": ("mars_trl.data.preparation", ["truncate_dataset"]),
    "mars_trl.train_script": ("mars_trl.cli.train", ["run_with_defaults", "make_parser"]),
    "mars_trl.demo": ("mars_trl.cli.demo", ["run_arm", "LABELS"]),
    "mars_trl.synthetic": ("mars_trl.cli.synthetic", ["make_preference_dataset"]),
    "mars_trl.peft_utils": ("mars_trl.peft.quantization", ["qlora_config", "default_compute_dtype"]),
    "mars_trl.merge": ("mars_trl.peft.merge", ["merge_adapter"]),
    "mars_trl.pool": ("mars_trl.refinement.pool", ["PairPool"]),
}
# Old names of modules that are packages now, or that kept a smaller job -> their new module.
OLD_NAMES = {
    ("mars_trl.peft_utils", "load_reward_model"): "mars_trl.peft.loading",
    ("mars_trl.peft_utils", "prepare_peft_config"): "mars_trl.peft.adapter_config",
    ("mars_trl.peft_utils", "find_reward_head"): "mars_trl.peft.heads",
    ("mars_trl.merge", "main"): "mars_trl.cli.merge",
    ("mars_trl.cli.demo", "paired_difference"): "mars_trl.evaluation.metrics",
    ("mars_trl.pool", "VariantCache"): "mars_trl.refinement.variant_cache",
    ("mars_trl.pool", "dataset_fetch"): "mars_trl.sampling.scoring",
    ("mars_trl.pool", "SOURCE"): "mars_trl.names",
    ("mars_trl.refinement", "Refiner"): "mars_trl.refinement.rounds",
    ("mars_trl.refinement", "AugmenterFailure"): "mars_trl.refinement.rounds",
    ("mars_trl.evaluation", "run"): "mars_trl.cli.evaluate",
    ("mars_trl.evaluation", "add_arguments"): "mars_trl.cli.evaluate",
    ("mars_trl.augment.base", "text_fields"): "mars_trl.data.fields",
    ("mars_trl.augment.base", "pair_core"): "mars_trl.data.fields",
    ("mars_trl.augment.base", "validate_variants"): "mars_trl.augment.variants",
}


@pytest.mark.parametrize("old", sorted(OLD_MODULES))
def test_old_module_path_warns_and_gives_the_same_objects(old):
    new, names = OLD_MODULES[old]
    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=f"`{old}` moved to `[^`]*{new}"):
        module = importlib.import_module(old)
    for name in names:
        assert getattr(module, name) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize(("old", "name"), sorted(OLD_NAMES))
def test_old_name_warns_and_is_the_same_object(old, name):
    new = OLD_NAMES[(old, name)]
    module = importlib.import_module(old)
    if old in OLD_MODULES:  # the module shim warns once, on import; its names are plain attributes
        assert getattr(module, name) is getattr(importlib.import_module(new), name)
        return
    with pytest.warns(FutureWarning, match=f"moved to `{new}.{name}`"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)


def test_renamed_constants_keep_their_old_names():
    from mars_trl.names import TEXT_COLUMNS

    with pytest.warns(FutureWarning, match="mars_trl.names.TEXT_COLUMNS"):
        assert importlib.import_module("mars_trl.refinement").TEXT_FIELDS == TEXT_COLUMNS
    with pytest.warns(FutureWarning, match="mars_trl.names.TEXT_COLUMNS"):
        assert importlib.import_module("mars_trl.augment.base").PAIR_KEYS == TEXT_COLUMNS


def test_packages_that_were_modules_keep_their_names():
    import mars_trl.evaluation as evaluation
    import mars_trl.semantic as semantic
    from mars_trl.cli import main
    from mars_trl.evaluation.scoring import score_pairs
    from mars_trl.semantic.sharpener import SemanticSharpener

    assert evaluation.score_pairs is score_pairs and semantic.SemanticSharpener is SemanticSharpener
    assert callable(main) and semantic.DEFAULT_EMBEDDER == importlib.import_module("mars_trl.names").DEFAULT_EMBEDDER


def test_demo_workers_pickle_by_their_new_path():
    from mars_trl.cli import demo

    for function in (demo.run_arm, demo._worker_start):
        assert function.__module__ == "mars_trl.cli.demo"
        assert pickle.loads(pickle.dumps(function)) is function
