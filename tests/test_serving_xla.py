"""XLA-compiled exports (``jit_compile=True``): parity with the executor path, and a warmup that leaves no compilation.

One tiny text classifier and one tiny GPT are exported with XLA; ``publish_saved_model``
verifies each against the Keras model run eagerly (TF's executor) in a process without
Keras. A second fresh process loads each export into a session as TF Serving does, replays
its warmup file, and counts XLA compilations (modules XLA dumps) before and after requests of
every bucket size that the warmup did not send verbatim: there must be none after it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import keras_hub
import pytest

import bigkeras
from bigkeras.serving import compatibility, publish_saved_model, read_warmup, text_classifier_signatures
from bigkeras.serving.signatures import gpt_signatures

pytestmark = pytest.mark.slow  # about 30 s to export and verify, 25 s to count compilations (2 CPU cores)

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "what a good movie", "a bad film"]
CHILD = Path(bigkeras.__file__).parent / "serving" / "verify_child.py"

# Loads an export as TF Serving does (verify_child's session loader: no Keras), replays its
# warmup, then sends the requests in argv[2] (JSON); prints XLA modules compiled after each phase.
COUNT_COMPILATIONS = r"""
import glob, json, os, sys
import numpy as np
sys.path.insert(0, os.path.dirname(sys.argv[3]))
import verify_child as child
export_dir, requests = sys.argv[1], json.loads(sys.argv[2])
child.load_tensorflow_text_kernels()
_, signatures = child.load_session(export_dir)
def compiled():
    return len(glob.glob(os.path.join(os.environ["DUMP"], "*before_optimizations.txt")))
for log in child.records(os.path.join(export_dir, child.WARMUP)):
    request = log.predict_log.request
    signatures[request.model_spec.signature_name].run(child.request_inputs(request))
after_warmup = compiled()
for name, inputs in requests:
    signatures[name].run({k: np.array(v, dtype=object if isinstance(v, list) and isinstance(v[0], str) else np.int32)
                          for k, v in inputs.items()})
print(json.dumps([after_warmup, compiled()]))
"""


@pytest.fixture(scope="module")
def xla_exports(tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models")
    keras.utils.set_random_seed(0)
    text = bigkeras.build("transformer_tiny", num_classes=3)
    vectorizer = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=text.inputs[0].shape[1])
    vectorizer.adapt(SENTENCES)
    gpt = bigkeras.build("gpt_tiny", vocab_size=256)
    tokenizer = keras_hub.tokenizers.ByteTokenizer()
    return {
        "text": publish_saved_model(  # rows padded to 1, 2, 4
            text, "text", base_dir=base, max_batch_size=4, jit_compile=True,
            signatures=lambda m: text_classifier_signatures(m, vectorizer, examples=SENTENCES)),
        "gpt": publish_saved_model(  # one row x prompt widths 16, 32 (the classifier covers row buckets)
            gpt, "gpt", base_dir=base, max_batch_size=1, jit_compile=True,
            signatures=lambda m: gpt_signatures(m, tokenizer, max_length=32, examples=["hello there"])),
    }


def compilations(path, requests, tmp_path):
    dump = tmp_path / "xla_dump"
    env = {**os.environ, "DUMP": str(dump), "XLA_FLAGS": f"--xla_dump_to={dump} --xla_dump_hlo_as_text",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", COUNT_COMPILATIONS, str(path), json.dumps(requests), str(CHILD)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_xla_exports_match_the_executor_path_and_need_the_server_flag(xla_exports):
    for published in xla_exports.values():
        report = published.report  # verified: the compiled session path against Keras run eagerly, 1e-5
        assert report.parity_checked and report.imported == []
        assert report.compatibility["xla"] and report.compatibility["server_flags"] == [compatibility.XLA_CPU_FLAG]
        assert compatibility.xla_functions(published.path)
    assert xla_exports["text"].report.warmup_records == 3  # one request per row bucket
    sent = {(len(log.predict_log.request.inputs["prompt"].string_val),
             int(log.predict_log.request.inputs["max_new_tokens"].int_val[0])) for log in read_warmup(xla_exports["gpt"].path)}
    assert sent == {(1, 16), (1, 1)}  # every row bucket (one) at each prompt width bucket (16, 32)


def test_no_request_compiles_after_the_warmup(xla_exports, tmp_path):
    text = [["serving_default", {"text": SENTENCES[:rows]}] for rows in (1, 2, 3, 4)]
    before, after = compilations(xla_exports["text"].path, text, tmp_path / "text")
    assert before >= 3 and after == before
    gpt = [["generate", {"prompt": ["a prompt"] * rows, "max_new_tokens": new}]
           for rows in (1,) for new in (3, 9, 20, 31)]  # prompt widths 29, 23 (bucket 32), 12, 1 (bucket 16)
    before, after = compilations(xla_exports["gpt"].path, gpt, tmp_path / "gpt")
    assert before >= 2 and after == before
