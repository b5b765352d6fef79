"""The pure parts of ``stale``: how a change reads, and the spec that retrains a stale model."""

from flotilla.lineage import DataLineage, ModelCard, ParentModel
from flotilla.registry import DataChange, ModelEntry, ModelLocation, StaleModel, retrain_spec
from flotilla.specs import DataSpec, FamilySpec, TransferSpec, parse_spec


def _model(strategy: str = "shared", model: str = "family") -> StaleModel:
    config = FamilySpec(
        name="fam",
        tasks=["age", {"name": "gender", "weight": 2.0}],
        strategy=strategy,
        data=DataSpec(repo="faces", dataset="faces", ref="main"),
        transfer=TransferSpec(source="lakefs://faces/abc/models/p0/family/model.pt", freeze_backbone_epochs=2),
    ).model_dump(mode="json")
    tasks = ({"name": "gender"},) if strategy == "separate" else ({"name": "age"}, {"name": "gender"})
    card = ModelCard(
        run_id="r1", model=model, created="", tasks=tasks,
        metrics={}, best_epoch=0, epochs_run=1, data=DataLineage("faces", "old" * 8, "faces", "main"), branch="exp-r1",
        code={}, config=config, parent=ParentModel("faces", "abc", "models/p0/family/model.pt"),
    )  # fmt: skip
    entry = ModelEntry(ModelLocation("faces", "c0ffee", f"models/r1/{model}/model.pt"), card)
    change = DataChange("faces", "faces", "old", "new", labels_changed={"gender": 37, "age": 2}, samples_relabelled=38)
    return StaleModel(entry, change, retrain_data="new" * 8)


def test_a_change_reads_as_what_happened_to_the_data():
    c = _model().change
    assert c is not None and c.labels_total == 39
    assert c.describe() == "+0 samples, 39 labels changed (age 2, gender 37), 0 shards replaced"
    grown = DataChange("faces", "faces", "a", "b", samples_added=60, samples_removed=3, shards_added=1, shards_replaced=2)
    assert grown.describe() == "+60 samples, -3 samples, 0 labels changed, 2 shards replaced, 1 shards added"


def test_the_retrain_spec_warm_starts_from_the_stale_model_on_the_new_data():
    m = _model()
    spec = parse_spec(FamilySpec, retrain_spec(m), "retrain spec")
    assert (
        spec.data.ref == "new" * 8 and spec.data.dataset == "faces" and spec.tasks == ["age", {"name": "gender", "weight": 2.0}]
    )
    assert spec.transfer == TransferSpec(source="lakefs://faces/c0ffee/models/r1/family/model.pt", load_heads=True)
    assert parse_spec(FamilySpec, retrain_spec(m, "main"), "retrain spec").data.ref == "main"
    assert m.entry.card.config["data"]["ref"] == "main"  # the card itself is left as it was
    one = parse_spec(FamilySpec, retrain_spec(_model("separate", "gender")), "retrain spec")
    assert one.tasks == [{"name": "gender", "weight": 2.0}] and one.strategy == "separate"
