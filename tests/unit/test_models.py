"""Unit tests for flotilla.models: tasks as data, masked losses, metrics, backbones, transfer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from flotilla.errors import SpecError
from flotilla.models import (
    REFERENCE_TASKS,
    LossWeighting,
    MetricAccumulator,
    MultiTaskModel,
    SingleTaskModel,
    auc_from_scores,
    build_backbone,
    chance_level,
    compute_losses,
    macro_f1_from_confusion,
    task_from_dict,
)
from flotilla.models.tasks import resolve_tasks

REF = list(REFERENCE_TASKS.values())


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def make_batch(n: int = 16, size: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "age": rng.uniform(1, 90, n).astype(np.float32),
        "gender": rng.integers(0, 2, n).astype(np.int64),
        "emotion": rng.integers(0, 7, n).astype(np.int64),
        "mask_age": rng.random(n) < 0.7,
        "mask_gender": rng.random(n) < 0.7,
        "mask_emotion": rng.random(n) < 0.7,
    }


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "e", "kind": "multiclass"}, "num_classes"),
        ({"name": "a", "kind": "regression", "loss": "ce"}, "loss"),
        ({"name": "g", "kind": "binary", "loss": "mse"}, "loss"),
        ({"name": "g", "kind": "binary", "metrics": ["mae"]}, "metrics"),
        ({"name": "g", "kind": "binary", "target_scale": 10}, "target_scale"),
        ({"name": "a", "kind": "regression", "target_scale": 0}, "target_scale"),
        ({"name": "a", "kind": "regression", "weight": -1}, "weight"),
        ({"name": "a", "kind": "regression", "metrics": ["mae"], "primary_metric": "rmse"}, "primary_metric"),
        ({"name": "a", "kind": "regression", "mode": "max"}, "mode"),
        ({"name": "a b", "kind": "regression"}, "name"),
        ({"name": "smile\n", "kind": "binary"}, "name"),  # '$' matched before a trailing newline
        ({"name": "x", "kind": "ordinal"}, "kind"),
        ({"name": "x", "kind": "binary", "colour": "red"}, "colour"),
        ({"name": "x"}, "kind"),
        ({"name": "e", "kind": "multiclass", "num_classes": 3, "classes": ["a", "b"]}, "classes"),
    ],
)
def test_invalid_task_names_the_field(spec: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        task_from_dict(spec)
    assert any(p.startswith(f"{field}:") for p in err.value.problems), err.value.problems


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(SpecError) as err:
        task_from_dict({"name": "x", "kind": "multiclass", "loss": "l1", "weight": "heavy", "typo": 1})
    fields = {p.split(":")[0] for p in err.value.problems}
    assert {"num_classes", "loss", "weight", "typo"} <= fields


def test_reference_tasks_and_defaults() -> None:
    age, gender, emotion = (REFERENCE_TASKS[k] for k in ("age", "gender", "emotion"))
    assert (age.loss, age.metrics, age.target_scale, age.primary_metric, age.mode) == ("l1", ("mae", "rmse"), 100.0, "mae", "min")
    assert (gender.loss, gender.metrics, gender.primary_metric, gender.mode, gender.classes) == (
        "bce",
        ("accuracy", "auc"),
        "accuracy",
        "max",
        ("female", "male"),
    )
    assert (emotion.num_classes, emotion.out_dim, emotion.primary_metric, emotion.mode) == (7, 7, "macro_f1", "max")
    for t in REF:
        assert task_from_dict(t.to_dict()) == t
    t = task_from_dict({"name": "smile", "kind": "binary"})
    assert (t.label, t.loss, t.metrics, t.mask_column, t.primary_key) == (
        "smile",
        "bce",
        ("accuracy", "auc"),
        "mask_smile",
        "smile/accuracy",
    )


def test_resolve_tasks_names_overrides_and_duplicates() -> None:
    tasks = resolve_tasks(["age", {"name": "gender", "weight": 0.5}, {"name": "smile", "kind": "binary"}])
    assert [t.name for t in tasks] == ["age", "gender", "smile"]
    assert tasks[1].weight == 0.5 and tasks[1].loss == "bce"
    with pytest.raises(SpecError, match="repeated: age"):
        resolve_tasks(["age", "age"])
    with pytest.raises(SpecError, match="unknown task 'agee'"):
        resolve_tasks(["agee"])


def test_chance_level() -> None:
    age = chance_level(REFERENCE_TASKS["age"], np.array([10.0, 20.0, 30.0, 100.0, np.nan]))
    assert age["age/n"] == 4 and age["age/mae"] == pytest.approx((15 + 5 + 5 + 75) / 4)
    assert age["age/rmse"] == pytest.approx(np.std([10, 20, 30, 100]))
    g = chance_level(REFERENCE_TASKS["gender"], np.array([1, 1, 1, 0, 1]), mask=np.array([1, 1, 1, 1, 0], bool))
    assert g == {"gender/n": 4.0, "gender/accuracy": 0.75, "gender/auc": 0.5}
    e = chance_level(REFERENCE_TASKS["emotion"], np.array([3, 3, 3, 0]))
    # majority F1 = 2*0.75/1.75, class 0 F1 = 0, averaged over the 2 classes present
    assert e["emotion/accuracy"] == 0.75 and e["emotion/macro_f1"] == pytest.approx(2 * 0.75 / 1.75 / 2)


def test_custom_task_from_dict_end_to_end() -> None:
    smile = task_from_dict({"name": "smile", "kind": "binary", "label": "smile", "metrics": ["accuracy", "auc"]})
    tasks = [REFERENCE_TASKS["age"], smile]
    torch.manual_seed(0)
    model = MultiTaskModel(tasks)
    batch = make_batch(12)
    batch["smile"] = np.array([0, 1] * 6)
    batch["mask_smile"] = np.array([True] * 10 + [False] * 2)
    out = model(batch["image"])
    assert out["smile"].shape == (12,)
    total, per_task = compute_losses(out, batch, model.tasks)
    total.backward()
    assert set(per_task) == {"age", "smile"} and per_task["smile"] > 0
    assert model.heads["smile"].weight.grad is not None
    acc = MetricAccumulator(model.tasks)
    acc.update(out, batch)
    res = acc.compute()
    assert res["smile/n"] == 10 and 0 <= res["smile/accuracy"] <= 1 and 0 <= res["smile/auc"] <= 1


def test_missing_label_column_is_a_clear_error() -> None:
    model = MultiTaskModel([{"name": "smile", "kind": "binary"}])
    batch = make_batch(4)
    with pytest.raises(SpecError, match="column 'smile'"):
        compute_losses(model(batch["image"]), batch, model.tasks)


@pytest.mark.parametrize("mode", ["fixed", "uncertainty"])
def test_masked_samples_do_not_change_the_loss(mode: str) -> None:
    torch.manual_seed(0)
    model = MultiTaskModel(REF)
    weighting = LossWeighting(model.tasks, mode)
    batch = make_batch(16)
    out = model(batch["image"])
    total, per_task = compute_losses(out, batch, model.tasks, weighting)
    changed = {k: v.copy() for k, v in batch.items()}
    changed["age"][~batch["mask_age"]] = np.nan  # unknown ages may arrive as NaN
    changed["gender"][~batch["mask_gender"]] = 1 - changed["gender"][~batch["mask_gender"]]
    changed["emotion"][~batch["mask_emotion"]] = 99  # even an out-of-range dummy is ignored
    total2, per_task2 = compute_losses(out, changed, model.tasks, weighting)
    assert per_task2 == pytest.approx(per_task)
    assert total2.item() == pytest.approx(total.item())
    # and the loss is the mean over labelled samples only
    m = batch["mask_age"]
    expected = np.abs(out["age"].detach().numpy()[m] - batch["age"][m] / 100).mean()
    assert per_task["age"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode", ["fixed", "uncertainty"])
def test_all_masked_task_gives_zero_loss_and_finite_grads(mode: str) -> None:
    torch.manual_seed(0)
    model = MultiTaskModel(REF)
    weighting = LossWeighting(model.tasks, mode)
    batch = make_batch(8)
    batch["mask_emotion"][:] = False
    batch["mask_age"][:] = False
    batch["age"][:] = np.nan
    total, per_task = compute_losses(model(batch["image"]), batch, model.tasks, weighting)
    assert per_task["emotion"] == 0.0 and per_task["age"] == 0.0
    total.backward()
    grads = [p.grad for p in [*model.parameters(), *weighting.parameters()] if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.heads["emotion"].weight.grad.abs().sum() == 0
    if mode == "uncertainty":
        g = weighting.log_vars.grad
        assert g[0] == 0 and g[2] == 0 and g[1] != 0  # absent tasks' log-variances are untouched
    batch["mask_gender"][:] = False  # a wholly unlabelled batch: 0, yet still backpropagates
    total, _ = compute_losses(model(batch["image"]), batch, model.tasks, weighting)
    assert total.item() == 0.0
    total.backward()


def test_fixed_weights_scale_each_task() -> None:
    torch.manual_seed(0)
    tasks = resolve_tasks([{"name": "age", "weight": 2.0}, {"name": "gender", "weight": 0.0}])
    model = MultiTaskModel(tasks)
    batch = make_batch(8)
    total, per_task = compute_losses(model(batch["image"]), batch, model.tasks)
    assert total.item() == pytest.approx(2.0 * per_task["age"], rel=1e-5)


def test_uncertainty_weights_are_trainable() -> None:
    torch.manual_seed(0)
    model = MultiTaskModel(REF)
    weighting = LossWeighting(model.tasks, "uncertainty")
    groups = model.param_groups(weighting, lr=1e-2, weight_decay=1e-4)
    wgroup = next(g for g in groups if g["name"] == "loss_weighting")
    assert wgroup["params"] == [weighting.log_vars] and wgroup["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())) + 1
    opt = torch.optim.AdamW(groups)
    batch = make_batch(16)
    for t in REF:
        batch[t.mask_column][:] = True
    total, per_task = compute_losses(model(batch["image"]), batch, model.tasks, weighting)
    # at s=0 the uncertainty total equals the plain sum of task losses
    assert total.item() == pytest.approx(sum(per_task.values()), rel=1e-5)
    total.backward()
    assert weighting.log_vars.grad is not None and (weighting.log_vars.grad != 0).all()
    before = weighting.log_vars.detach().clone()
    opt.step()
    assert not torch.equal(before, weighting.log_vars.detach())
    assert set(weighting.effective_weights()) == {"age", "gender", "emotion"}
    with pytest.raises(SpecError, match="fixed, uncertainty"):
        LossWeighting(model.tasks, "gradnorm")


def test_model_owned_uncertainty_weighting_is_in_params_groups_and_checkpoint() -> None:
    model = MultiTaskModel(REF, weighting="uncertainty")
    log_vars = model.loss_weighting.log_vars
    assert any(p is log_vars for p in model.parameters())
    assert "loss_weighting.log_vars" in model.state_dict() and "loss_weighting.weights" not in model.state_dict()
    groups = model.param_groups(lr=1e-3, weight_decay=0.1)
    listed = [p for g in groups for p in g["params"]]
    assert len(listed) == len({id(p) for p in listed}) == len(list(model.parameters()))
    assert [g["name"] for g in groups if any(p is log_vars for p in g["params"])] == ["loss_weighting"]
    batch = make_batch(8)
    total, _ = compute_losses(model(batch["image"]), batch, model.tasks, model.loss_weighting)
    total.backward()
    assert log_vars.grad is not None
    assert MultiTaskModel.from_config(model.config()).loss_weighting.mode == "uncertainty"


def brute_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


def test_auc_with_ties_matches_pair_counting() -> None:
    scores = np.array([0.1, 0.4, 0.4, 0.4, 0.8, 0.8, 0.2, 0.9])
    labels = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    assert auc_from_scores(scores, labels) == pytest.approx(brute_auc(scores, labels))
    rng = np.random.default_rng(1)
    s, y = rng.integers(0, 5, 200).astype(float), rng.integers(0, 2, 200)
    assert auc_from_scores(s, y) == pytest.approx(brute_auc(s, y))
    assert np.isnan(auc_from_scores(np.array([0.1, 0.2]), np.array([1, 1])))


def test_macro_f1_with_missing_class() -> None:
    # 4 classes; class 3 never occurs in labels or predictions and is excluded
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0])
    cm = np.zeros((4, 4), int)
    np.add.at(cm, (labels, preds), 1)
    f1 = [2 * 1 / (2 * 1 + 1 + 1), 2 * 2 / (2 * 2 + 1 + 0), 0.0]  # class 2: never predicted -> 0
    assert macro_f1_from_confusion(cm) == pytest.approx(np.mean(f1))


def test_accumulator_matches_hand_computed_values() -> None:
    tasks = REF
    acc = MetricAccumulator(tasks)
    outputs = {
        "age": torch.tensor([0.20, 0.30, 0.50, 0.0]),  # scaled: predictions 20, 30, 50 years
        "gender": torch.tensor([2.0, -1.0, 0.5, 0.5]),
        "emotion": torch.tensor(
            [[5.0, 0, 0, 0, 0, 0, 0], [0, 5.0, 0, 0, 0, 0, 0], [0, 5.0, 0, 0, 0, 0, 0], [0, 0, 5.0, 0, 0, 0, 0]]
        ),
    }
    batch = {
        "age": np.array([25.0, 30.0, 40.0, 99.0], np.float32),
        "mask_age": np.array([True, True, True, False]),
        "gender": np.array([1, 0, 0, 1]),
        "mask_gender": np.array([True, True, True, True]),
        "emotion": np.array([0, 1, 0, 6]),
        "mask_emotion": np.array([True, True, True, False]),
    }
    acc.update(outputs, batch)
    r = acc.compute()
    assert r["age/n"] == 3 and r["age/mae"] == pytest.approx((5 + 0 + 10) / 3)
    assert r["age/rmse"] == pytest.approx(np.sqrt((25 + 0 + 100) / 3))
    assert r["gender/accuracy"] == pytest.approx(3 / 4)
    assert r["gender/auc"] == pytest.approx(brute_auc(np.array([2.0, -1.0, 0.5, 0.5]), batch["gender"]))
    assert r["emotion/n"] == 3 and r["emotion/accuracy"] == pytest.approx(2 / 3)
    # class 0: tp1 fn1 -> 2/3; class 1: tp1 fp1 -> 2/3; classes 2..6 absent from labels and predictions
    assert r["emotion/macro_f1"] == pytest.approx(2 / 3)
    empty = MetricAccumulator(tasks).compute()
    assert empty["age/n"] == 0 and np.isnan(empty["age/mae"]) and np.isnan(empty["gender/auc"])


def test_merge_equals_single_accumulator() -> None:
    torch.manual_seed(0)
    model = MultiTaskModel(REF).eval()
    batches = [make_batch(10, seed=s) for s in range(4)]
    whole, a, b = MetricAccumulator(REF), MetricAccumulator(REF), MetricAccumulator(REF)
    with torch.no_grad():
        for i, batch in enumerate(batches):
            out = model(batch["image"])
            whole.update(out, batch)
            (a if i % 2 else b).update(out, batch)
    shipped = pickle.loads(pickle.dumps(b.state()))
    merged = a.merge(shipped).compute()
    expected = whole.compute()
    assert merged.keys() == expected.keys()
    for k in expected:
        assert merged[k] == pytest.approx(expected[k], rel=1e-9, nan_ok=True), k
    combined = MetricAccumulator.from_states(REF, [MetricAccumulator(REF).state(), whole.state()]).compute()
    assert combined == pytest.approx(expected, nan_ok=True)


def test_unknown_backbone_lists_choices() -> None:
    with pytest.raises(SpecError, match="small_cnn, resnet"):
        build_backbone("vit")


@pytest.mark.parametrize("name", ["small_cnn", "resnet"])
@pytest.mark.parametrize("size", [64, 48])
def test_backbones_forward_any_size(name: str, size: int) -> None:
    bb = build_backbone(name, width=8)
    feats = bb(torch.randn(2, 3, size, size))
    assert feats.shape == (2, bb.out_features)
    model = MultiTaskModel(REF, name, width=8)
    out = model(make_batch(2, size=size)["image"])
    assert out["age"].shape == (2,) and out["emotion"].shape == (2, 7)


def test_float_nchw_input_and_predict_units() -> None:
    torch.manual_seed(0)
    model = SingleTaskModel("age").eval()
    assert model.task.name == "age" and list(model.heads) == ["age"]
    raw = model(torch.randn(3, 3, 64, 64))["age"]
    images = make_batch(3)["image"]
    assert torch.allclose(model.predict(images)["age"], model(images)["age"] * 100)
    assert raw.shape == (3,)
    rebuilt = SingleTaskModel.from_config(model.config())
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    assert torch.allclose(rebuilt(images)["age"], model(images)["age"])


def test_load_backbone_and_heads() -> None:
    torch.manual_seed(0)
    src = MultiTaskModel(REF)
    torch.manual_seed(1)
    dst = MultiTaskModel([REFERENCE_TASKS["gender"], {"name": "smile", "kind": "binary"}])
    dst.load_backbone(src.backbone_state_dict())
    for (k, v), v2 in zip(src.backbone.state_dict().items(), dst.backbone.state_dict().values(), strict=True):
        assert torch.equal(v, v2), k
    torch.manual_seed(2)
    dst2 = MultiTaskModel(REF)
    dst2.load_backbone(src.state_dict())  # a whole model's state dict works too
    assert torch.equal(dst2.backbone.features[0].weight, src.backbone.features[0].weight)
    assert dst.load_heads(src.state_dict()) == ["gender"]
    assert torch.equal(dst.heads["gender"].weight, src.heads["gender"].weight)
    assert dst2.load_heads(src.heads.state_dict(), tasks=["age"]) == ["age"]
    with pytest.raises(SpecError, match="backbone"):
        MultiTaskModel(REF, "resnet", width=8).load_backbone(src.backbone_state_dict())
    other = MultiTaskModel([{"name": "emotion", "kind": "multiclass", "num_classes": 5}])
    with pytest.raises(SpecError, match="head 'emotion'"):
        other.load_heads(src.state_dict())


def test_frozen_backbone_gets_no_grad_and_keeps_bn_stats() -> None:
    torch.manual_seed(0)
    model = MultiTaskModel(REF)
    model.freeze_backbone(True)
    model.train()
    assert not model.backbone.training and model.heads.training
    bn = model.backbone.features[1]
    stats = bn.running_mean.clone()
    batch = make_batch(8)
    total, _ = compute_losses(model(batch["image"]), batch, model.tasks)
    total.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.heads.parameters())
    assert torch.equal(bn.running_mean, stats)
    model.freeze_backbone(False)
    assert model.backbone.training and all(p.requires_grad for p in model.backbone.parameters())


def test_tiny_overfit_all_reference_tasks() -> None:
    """Random labels can only be fitted by memorising: proves gradients reach every head and the backbone."""
    torch.manual_seed(0)
    batch = make_batch(32, seed=3)
    for t in REF:
        batch[t.mask_column][:] = True
    model = MultiTaskModel(REF, "small_cnn")
    opt = torch.optim.Adam(model.param_groups(lr=3e-3))
    first: dict[str, float] = {}
    for _ in range(100):
        opt.zero_grad(set_to_none=True)
        total, per_task = compute_losses(model(batch["image"]), batch, model.tasks)
        total.backward()
        opt.step()
        first = first or per_task
    model.eval()
    with torch.no_grad():
        out = model(batch["image"])
        _, last = compute_losses(out, batch, model.tasks)
    assert all(last[k] < 0.5 * first[k] for k in first), (first, last)
    acc = MetricAccumulator(REF)
    acc.update(out, batch)
    r = acc.compute()
    chance = {
        **chance_level(REF[0], batch["age"]),
        **chance_level(REF[1], batch["gender"]),
        **chance_level(REF[2], batch["emotion"]),
    }
    assert r["age/mae"] < 0.5 * chance["age/mae"], (r, chance)
    assert r["gender/accuracy"] > 0.9 and r["emotion/accuracy"] > 0.9, r
