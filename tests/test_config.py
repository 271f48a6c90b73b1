"""Configs read and write the same config.json as transformers, and refuse what they cannot build."""

import json

import pytest

from minialign import AlignConfig, AlignTextConfig, AlignVisionConfig, ConfigError


@pytest.mark.parametrize("ours", [AlignTextConfig, AlignVisionConfig, AlignConfig])
def test_defaults_are_transformers_defaults(ours):
    import transformers

    theirs = getattr(transformers, ours.__name__)().to_dict()
    mine = ours().to_dict()
    for key, value in mine.items():
        if key in ("text_config", "vision_config"):
            continue
        assert key in theirs, key
        assert theirs[key] == value, (key, theirs[key], value)


def test_align_base_shape_facts():
    c = AlignConfig()
    assert c.vision_config.num_hidden_layers == 55  # round_repeats with depth 3.1
    assert c.text_config.head_dim == 64
    assert c.projection_dim == 640


def test_round_trip_through_transformers(tmp_path):
    from transformers import AlignConfig as HFAlignConfig

    mine = AlignConfig(
        text_config=AlignTextConfig(hidden_size=48, num_attention_heads=4, hidden_act="gelu_new"),
        vision_config=AlignVisionConfig(width_coefficient=0.5, depthwise_padding=[3]),
        projection_dim=17,
        temperature_init_value=0.3,
    )
    mine.save_pretrained(tmp_path)
    theirs = HFAlignConfig.from_pretrained(tmp_path)
    assert theirs.projection_dim == 17 and theirs.temperature_init_value == 0.3
    assert theirs.text_config.hidden_act == "gelu_new" and theirs.vision_config.depthwise_padding == [3]
    theirs.save_pretrained(tmp_path / "back")
    again = AlignConfig.from_pretrained(tmp_path / "back")
    assert again == mine
    # transformers' own bookkeeping keys are kept, not lost, on the way through.
    assert "transformers_version" in again.extra
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == "align"


def test_unknown_keys_are_kept_and_written_back(tmp_path):
    c = AlignTextConfig.from_dict({"model_type": "align_text_model", "hidden_size": 48, "my_note": [1, 2]})
    assert c.extra == {"my_note": [1, 2]}
    c.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["my_note"] == [1, 2]


def test_plain_bert_config_loads_as_text_config(tmp_path):
    from transformers import BertConfig

    BertConfig(vocab_size=123, hidden_size=24, num_attention_heads=3).save_pretrained(tmp_path)
    c = AlignTextConfig.from_pretrained(tmp_path)
    assert (c.vocab_size, c.hidden_size, c.num_attention_heads) == (123, 24, 3)
    assert "use_cache" in c.extra  # BERT-only field: kept, unused


def test_relative_position_bert_is_refused():
    with pytest.raises(ConfigError, match="position_embedding_type 'relative_key'"):
        AlignTextConfig.from_dict({"model_type": "bert", "position_embedding_type": "relative_key"})


@pytest.mark.parametrize(
    "cls, data, message",
    [
        (AlignTextConfig, {"hidden_size": "768"}, r"AlignTextConfig.hidden_size: expected <class 'int'>, found '768'"),
        (AlignTextConfig, {"hidden_size": True}, r"hidden_size: expected"),
        (AlignTextConfig, {"layer_norm_eps": None}, r"layer_norm_eps"),
        (AlignTextConfig, {"hidden_size": 10, "num_attention_heads": 3}, r"not a multiple"),
        (AlignTextConfig, {"hidden_act": "prelu"}, r"AlignTextConfig.hidden_act 'prelu' has learned weights"),
        (AlignVisionConfig, {"hidden_act": "swsh"}, r"AlignVisionConfig.hidden_act 'swsh' is not an activation "
                                                    r"minialign implements; use one of transformers' names \['gelu'"),
        (AlignVisionConfig, {"strides": [1, 2, 2, 3, 1, 2, 1]}, r"strides must each be 1 or 2, found \[1, 2, 2, 3"),
        (AlignVisionConfig, {"kernel_sizes": [3, 1, 5, 3, 5, 5, 3]}, r">= 2 in a stage of stride 2"),
        (AlignVisionConfig, {"hidden_dim": 0}, r"hidden_dim must be >= 1"),
        (AlignTextConfig, {"return_dict": False}, r"AlignTextConfig.return_dict=False \(tuple outputs\) is not "
                                                  r"supported"),
        (AlignVisionConfig, {"kernel_sizes": [3, "5"]}, r"kernel_sizes"),
        (AlignVisionConfig, {"strides": [1, 2]}, r"per-stage lists differ in length"),
        (AlignVisionConfig, {"pooling_type": "sum"}, r"pooling_type"),
        (AlignConfig, {"text_config": {"vocab_size": -1}}, r"vocab_size must be >= 1"),
        (AlignConfig, {"model_type": "clip"}, r"model_type 'clip'"),
        (AlignConfig, {"projection_dim": 2.5}, r"projection_dim"),
    ],
)
def test_bad_values_are_clear_errors(cls, data, message):
    with pytest.raises(ConfigError, match=message):
        cls.from_dict(data)


def test_integers_are_accepted_for_float_fields():
    assert AlignTextConfig.from_dict({"hidden_dropout_prob": 0}).hidden_dropout_prob == 0.0


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        AlignConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config.json is not valid JSON"):
        AlignConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"projection_dim": 640}')
    with pytest.raises(ConfigError, match=r"missing required field 'model_type'"):
        AlignConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "align", "projection_dim": "x"}')
    with pytest.raises(ConfigError, match=r"config.json: AlignConfig.projection_dim"):
        AlignConfig.from_pretrained(tmp_path)


# -- the audit: every field of transformers' configs, with its default -------------------------------


def _transformers_fields(cls) -> list[str]:
    """A transformers config class's fields: its constructor's keywords and its to_dict's keys."""
    import inspect

    names = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    return names + [k for k in cls().to_dict() if k not in names]


@pytest.mark.parametrize("name", ["AlignTextConfig", "AlignVisionConfig", "AlignConfig"])
def test_every_transformers_field_is_audited(name):
    """A field transformers adds (or drops) fails here by name until config.TRANSFORMERS_FIELDS
    says what minialign does with it."""
    import transformers

    from minialign.config import TRANSFORMERS_FIELDS

    theirs = _transformers_fields(getattr(transformers, name))
    new = [f for f in theirs if f not in TRANSFORMERS_FIELDS[name]]
    assert not new, f"transformers' {name} has field(s) {new} missing from minialign.config.TRANSFORMERS_FIELDS"
    gone = [f for f in TRANSFORMERS_FIELDS[name] if f not in theirs]
    assert not gone, f"minialign.config.TRANSFORMERS_FIELDS[{name!r}] lists {gone}, which transformers no longer has"


@pytest.mark.parametrize("name", ["AlignTextConfig", "AlignVisionConfig", "AlignConfig"])
def test_every_field_has_transformers_default_or_is_kept(name):
    """Fields minialign reads (model, outputs, training) are dataclass fields with transformers'
    defaults; bookkeeping and no-effect fields are too (BERT's token ids) or are kept in extra
    and written back as they came."""
    import dataclasses

    import minialign
    import transformers
    from minialign.config import DERIVED, KEPT, NO_EFFECT, TRANSFORMERS_FIELDS

    theirs = getattr(transformers, name)().to_dict()
    ours_cls = getattr(minialign, name)
    ours = ours_cls()
    fields = {f.name for f in dataclasses.fields(ours_cls)} - {"extra"}
    assert fields <= set(TRANSFORMERS_FIELDS[name]), fields - set(TRANSFORMERS_FIELDS[name])  # none of our own
    for field, use in TRANSFORMERS_FIELDS[name].items():
        if use in (KEPT, NO_EFFECT) and field not in fields:
            if field in theirs:  # e.g. id2label; a value other than the default is kept too
                value = theirs[field] if theirs[field] is not None else "x"
                back = ours_cls.from_dict({field: value}).to_dict()
                assert back[field] == value, field
        elif use == DERIVED:
            assert getattr(ours, field) == theirs[field], field
        elif field in ("text_config", "vision_config"):
            assert getattr(ours, field).to_dict() == getattr(ours_cls(), field).to_dict()
        else:
            assert field in fields, f"{name}.{field} is audited as {use!r} but is not a field"
            assert getattr(ours, field) == theirs[field], (field, getattr(ours, field), theirs[field])


def test_output_flags_from_the_config_and_return_dict_refused():
    c = AlignTextConfig(output_hidden_states=True, output_attentions=True)
    assert c.to_dict()["output_hidden_states"] is True
    with pytest.raises(ConfigError, match=r"return_dict=False \(tuple outputs\) is not supported"):
        AlignConfig.from_dict({"return_dict": False})


def test_constructor_keeps_unknown_keywords_and_warns_on_a_near_miss():
    c = AlignTextConfig(is_decoder=False, chunk_size_feed_forward=4, num_hidden_layers=3)
    assert c.extra == {"is_decoder": False, "chunk_size_feed_forward": 4} and c.num_hidden_layers == 3
    with pytest.warns(UserWarning, match=r"unknown field 'hiden_size' kept in extra and not used; did you mean "
                                         r"'hidden_size'\?"):
        AlignTextConfig(hiden_size=64)
    vision = AlignVisionConfig(num_hidden_layers=99)  # derived, as in transformers: the repeats decide
    assert vision.num_hidden_layers == 55 and "num_hidden_layers" not in vision.extra


@pytest.mark.parametrize("act", ["gelu", "gelu_pytorch_tanh", "quick_gelu", "relu6", "mish", "tanh", "sigmoid"])
def test_both_towers_take_any_activation_of_transformers_table(act):
    assert AlignVisionConfig(hidden_act=act).hidden_act == AlignTextConfig(hidden_act=act).hidden_act == act


def test_the_checkpoints_page_lists_every_field_as_the_code_does():
    """docs/checkpoints.md's field tables: every field of TRANSFORMERS_FIELDS with its use, the
    common fields once and each class's own under its name, and nothing else."""
    import pathlib
    import re

    from minialign.config import _COMMON, TRANSFORMERS_FIELDS

    page = (pathlib.Path(__file__).parent.parent / "docs" / "checkpoints.md").read_text()
    section = page.split("### Every field, and what minialign does with it")[1].split("\n## ")[0]
    parts = re.split(r"\n`(Align\w*Config)`:\n", section)
    tables = {"common": parts[0], **dict(zip(parts[1::2], parts[2::2]))}

    def rows(text):
        return dict(re.findall(r"^\| `(\w+)` \| .*? \| ([a-z ]+) \|", text, flags=re.M))

    assert rows(tables["common"]) == _COMMON
    for name, fields in TRANSFORMERS_FIELDS.items():
        assert rows(tables[name]) == {f: use for f, use in fields.items() if f not in _COMMON}, name
