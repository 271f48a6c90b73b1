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
        (AlignTextConfig, {"hidden_act": "mish"}, r"hidden_act 'mish'"),
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
