import json

import pytest

from segpipe.models import ClassInfo, Domain, ModelCard, ModelError, Normalization, NormMethod
from segpipe.models.card import default_palette


def _card() -> ModelCard:
    return ModelCard(
        name="landcover",
        bands=4,
        classes=(ClassInfo("water", (0, 0, 255)), ClassInfo("forest", (16, 128, 32))),
        normalization=Normalization(NormMethod.MEANSTD, mean=(1.0, 2.0, 3.0, 4.0), std=(1,) * 4),
        margin=92,
        stride=16,
        pixel_size=30.0,
        pixel_size_unit="m",
        architecture={"name": "unet", "config": {"depth": 4, "sizes": (1, 2)}},
        license="CC-BY-4.0",
        training_data="LandCover.ai",
        metrics={"miou": 0.71},
        description="demo",
    )


def test_json_round_trip_and_hex_colors():
    card = _card()
    data = json.loads(card.to_json())
    assert data["classes"][0] == {"name": "water", "color": "#0000ff"}
    assert data["normalization"]["method"] == "meanstd"
    back = ModelCard.from_json(card.to_json())
    assert back == card
    assert back.num_classes == 2
    assert back.normalization.std == (1.0, 1.0, 1.0, 1.0)
    assert ModelCard.from_dict(card.to_dict()) == card
    assert hash(back) == hash(card)


def test_minimal_dict_defaults():
    card = ModelCard.from_dict(
        {"name": "m", "bands": 3, "classes": [{"name": "a", "color": [1, 2, 3]}]}
    )
    assert card.normalization == Normalization(NormMethod.SCALE)
    assert card.classes[0].color == (1, 2, 3)
    assert card.metrics == {}
    assert ModelCard.from_dict({**card.to_dict(), "normalization": "percentile"}).normalization == (
        Normalization(NormMethod.PERCENTILE)
    )


def test_default_card_and_palette():
    card = ModelCard.default("m", 3, 5, stride=8)
    assert [c.name for c in card.classes] == [f"class_{i}" for i in range(5)]
    assert card.stride == 8
    palette = default_palette(300)
    assert len(set(palette)) == 300
    assert palette[:3] == ((0, 0, 0), (128, 0, 0), (0, 128, 0))
    assert [c.color for c in card.classes] == list(palette[:5])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"bands": 0}, "bands"),
        ({"name": ""}, "name"),
        ({"classes": []}, "classes"),
        ({"classes": [{"name": "a", "color": "#12345"}]}, "classes[0].color"),
        ({"classes": [{"name": "a", "color": "#000000"}] * 2}, "classes"),
        ({"margin": -1}, "margin"),
        ({"stride": 0}, "stride"),
        ({"pixel_size": -2.0}, "pixel_size"),
        ({"normalization": {"method": "zscore"}}, "normalization.method"),
        ({"normalization": {"method": "meanstd", "mean": [0.0] * 3}}, "normalization.std"),
        ({"normalization": {"method": "scale", "mean": [0.0], "std": [1.0]}}, "normalization"),
        ({"normalization": {"method": "percentile", "low": 50, "high": 2}}, "low/high"),
        ({"normalization": {"method": "meanstd", "mean": [0, 0], "std": [1, 1]}}, "mean/std"),
        ({"metrics": {"x": float("nan")}}, "metrics"),
        ({"architecture": {"config": {}}}, "architecture.name"),
    ],
)
def test_validation_errors_name_the_field(change, field):
    data = {**_card().to_dict(), **change}
    with pytest.raises(ModelError, match=field.replace("[", r"\[").replace("]", r"\]")):
        ModelCard.from_dict(data)


def test_unknown_field_suggests_the_right_one():
    data = {**_card().to_dict(), "strides": 4}
    with pytest.raises(ModelError, match="did you mean 'stride'"):
        ModelCard.from_dict(data)


def test_missing_required_and_bad_json():
    data = _card().to_dict()
    del data["bands"]
    with pytest.raises(ModelError, match="bands"):
        ModelCard.from_dict(data)
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelCard.from_json("{not json")
    with pytest.raises(ModelError, match="JSON object"):
        ModelCard.from_json("[1, 2]")


def test_card_is_frozen():
    card = _card()
    with pytest.raises(AttributeError):
        card.bands = 3  # type: ignore[misc]


def _described(**kw) -> dict:
    """The JSON of a card with the input-description fields (what bundled models carry)."""
    fields = {"band_names": ["blue", "green", "red", "nir"], "domain": "geo",
              "pixel_size_range": [10, 60], "pixel_size_unit": "m", **kw}
    return {**_card().to_dict(), **fields}


def test_input_description_fields_round_trip():
    card = ModelCard.from_dict(_described())
    assert card.band_names == ("blue", "green", "red", "nir")
    assert card.domain is Domain.GEO
    assert card.pixel_size_range == (10.0, 60.0)
    data = json.loads(card.to_json())
    assert data["band_names"] == ["blue", "green", "red", "nir"]
    assert data["domain"] == "geo" and data["pixel_size_range"] == [10.0, 60.0]
    assert ModelCard.from_json(card.to_json()) == card


def test_old_cards_without_the_new_fields_stay_valid():
    old = {k: v for k, v in _card().to_dict().items()
           if k not in ("band_names", "domain", "pixel_size_range")}
    card = ModelCard.from_dict(old)
    assert (card.band_names, card.domain, card.pixel_size_range) == (None, None, None)
    assert card == _card()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"band_names": ["b", "g", "r"]}, "one name per band"),
        ({"band_names": ["b", "g", "R", "r"]}, "unique"),
        ({"band_names": "bgrn"}, "band_names"),
        ({"domain": "space"}, "use one of geo, microscopy"),
        ({"pixel_size_range": [60, 10]}, "0 < min <= max"),
        ({"pixel_size_range": [10]}, "pixel_size_range"),
        ({"pixel_size_range": [10, 20], "pixel_size_unit": None}, "pixel_size_unit"),
        ({"pixel_size": 30.0, "pixel_size_range": [1, 20]}, "within pixel_size_range"),
    ],
)
def test_input_description_validation(change, message):
    data = _described(**change)
    if change.get("pixel_size_unit", "") is None:
        del data["pixel_size_unit"]
    with pytest.raises(ModelError, match=message):
        ModelCard.from_dict(data)
