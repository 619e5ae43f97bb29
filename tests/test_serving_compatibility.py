"""Which TF Serving releases load an export: the op tables, the stored report, verify --tf-serving."""

import json

import keras_hub
import pytest

import bigkeras
from bigkeras import cli
from bigkeras.data.packing import BertSingleSegmentPreprocessor
from bigkeras.serving import IncompatibleRelease, export_saved_model, preprocessed_text_signatures
from bigkeras.serving import compatibility as compat

VOCABULARY = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", "a", "fine", "film", "dull"]
WORDPIECE_OPS = {"RegexSplitWithOffsets", "FastWordpieceTokenizeWithOffsets", "CaseFoldUTF8", "NormalizeUTF8"}


def test_round_robin_trim_needs_tf_serving_2_20_and_the_error_names_it():
    report = compat.compatibility_report({"MatMul", "Softmax", "TFText>RoundRobinTrim", *WORDPIECE_OPS})
    assert report["minimum_release"] == "2.20" and report["loads_on"] == ["2.20", "2.21"]
    assert report["needs"] == {"TFText>RoundRobinTrim": "2.20"}
    assert report["releases"]["2.19"] == {
        "status": "fails", "image": "tensorflow/serving:2.19.1", "tf_text": "2.12.1",
        "missing": ["TFText>RoundRobinTrim"], "unchecked": []}
    with pytest.raises(IncompatibleRelease, match=r"TF Serving 2\.19 cannot load this export: it does not register "
                                                  r"TFText>RoundRobinTrim \(first in 2\.20\); use TF Serving 2\.20"):
        compat.check_release(report, "2.19")
    assert compat.check_release(report, "2.20.0")["status"] == "loads"


def test_the_tables_cover_2_14_to_2_21():
    assert compat.RELEASE_NAMES == ("2.14", "2.15", "2.16", "2.17", "2.18", "2.19", "2.20", "2.21")
    # A WordPiece tokenizer's TF Text ops are linked by every release (TF Text 2.12.1 has them).
    assert compat.compatibility_report(WORDPIECE_OPS)["minimum_release"] == "2.14"
    # A core op newer than a release's TensorFlow rules it out: DecodeWebP is new in TensorFlow 2.20.
    assert compat.compatibility_report({"DecodeWebP"})["needs"] == {"DecodeWebP": "2.20"}
    assert compat.compatibility_report({"FFTND"})["minimum_release"] == "2.15"
    # Python callbacks never run in the model server; an op nobody registers never loads.
    for op in ("EagerPyFunc", "MyCustomOp"):
        report = compat.compatibility_report({"MatMul", op})
        assert report["loads_on"] == [] and report["needs"] == {op: None}
        with pytest.raises(IncompatibleRelease, match=rf"{op} \(in no TF Serving release\)"):
            compat.check_release(report, "2.21")
    with pytest.raises(ValueError, match=r"`tf_serving` must be a TF Serving release in 2\.14, .*2\.21, got '2\.9'"):
        compat.release("2.9")


@pytest.fixture(scope="module")
def bert_exports(tmp_path_factory):
    """One tiny BERT classifier exported twice: keras-hub's packing, then core-op packing."""
    base = tmp_path_factory.mktemp("bert")
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCABULARY, lowercase=True)
    model = bigkeras.build("bert_tiny", vocab_size=len(VOCABULARY))
    exports = {}
    for name, preprocess in (("keras_hub", keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=8)),
                             ("core", BertSingleSegmentPreprocessor(tokenizer, sequence_length=8))):
        signatures = preprocessed_text_signatures(model, preprocess, examples=["a fine film", "dull"])
        exports[name] = export_saved_model(model, name, base_dir=base, signatures=signatures, verify=False)
    return exports


@pytest.mark.slow
def test_bert_packing_decides_the_oldest_release(bert_exports, capsys):
    hub, core = bert_exports["keras_hub"], bert_exports["core"]
    stored = json.loads(compat.report_path(hub).read_text())  # written at export, beside the warmup file
    assert stored == compat.compatibility_report(compat.graph_ops(hub))
    assert stored["minimum_release"] == "2.20" and "TFText>RoundRobinTrim" in stored["ops"]["tf_text"]
    assert compat.load_report(core)["minimum_release"] == "2.14"
    assert set(compat.load_report(core)["ops"]["tf_text"]) == {"CaseFoldUTF8", "FastWordpieceTokenizeWithOffsets",
                                                              "RegexSplitWithOffsets"}

    with pytest.raises(SystemExit, match=r"TF Serving 2\.19 cannot load this export: it does not register "
                                         r"TFText>RoundRobinTrim \(first in 2\.20\)"):
        cli.main(["verify", str(hub), "--tf-serving", "2.19"])
    assert cli.main(["verify", str(core), "--tf-serving", "2.19"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["compatibility"]["minimum_release"] == "2.14" and report["imported"] == []

    assert cli.main(["inspect", str(hub)]) == 0
    out = capsys.readouterr().out
    assert "TF Serving compatibility (assets.extra/bigkeras_serving_compatibility.json)" in out
    assert "minimum TF Serving release: 2.20" in out
    assert "tensorflow/serving:2.19.1    fails: lacks TFText>RoundRobinTrim" in out
