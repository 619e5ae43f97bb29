"""Publishing: only verified exports reach a version directory, and no export replaces another's.

TF Serving polls ``<base_dir>/<name>/`` for integer directories and loads the newest; an export
is therefore verified in a hidden temporary directory, renamed into place with a rename that
never replaces (``renameat2(RENAME_NOREPLACE)``), and only then named in ``models.config``.
"""

import json
import os
import subprocess
import textwrap
import time

import numpy as np
import pytest

import bigkeras
from bigkeras.serving import VerificationError, export_saved_model, publish_saved_model, verify
from bigkeras.serving import export as export_lib
from bigkeras.serving.config import list_versions
from tests.cluster import PYTHON

INPUTS = np.linspace(-1, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)  # mlp_tiny takes (8, 8)

RACER = textwrap.dedent("""
    import json, os, pathlib, sys, time
    import keras, numpy as np
    import bigkeras
    from bigkeras.serving import publish_saved_model
    base, seed, go = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
    keras.utils.set_random_seed(seed)
    model = bigkeras.build("mlp_tiny")
    inputs = np.linspace(-1, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    logits = np.asarray(model.predict_on_batch(inputs)).tolist()
    while not go.exists():  # both processes start exporting at the same moment
        time.sleep(0.01)
    published = publish_saved_model(model, "mlp", base_dir=base, write_config=True)
    print(json.dumps({"path": str(published.path), "logits": logits}))
""")


@pytest.mark.slow
def test_two_exports_at_once_end_as_two_versions_each_its_own_model(tmp_path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([PYTHON, "-c", RACER, str(tmp_path), str(seed), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    time.sleep(1.0)
    go.touch()
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sorted(os.path.basename(o["path"]) for o in outs) == ["1", "2"]
    assert sorted(p.name for p in (tmp_path / "mlp").iterdir()) == ["1", "2"]  # no temporary directory left
    assert not np.allclose(outs[0]["logits"], outs[1]["logits"])  # two different models
    for out in outs:  # each version answers as the model of the process that published it
        logits = np.array(out["logits"], np.float32)
        verify(out["path"], expected={"serving_default": ({"inputs": INPUTS}, {
            "logits": logits, "class_id": logits.argmax(-1).astype(np.int32),
            "probabilities": np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)})}, atol=1e-4)
    from bigkeras.serving import read_model_config

    (entry,) = read_model_config(tmp_path / "models.config").model_config_list.config
    assert dict(entry.version_labels) == {"stable": 2, "previous": 1}  # written after both published


def test_a_failing_verify_publishes_nothing_and_leaves_the_config(tmp_path):
    model = bigkeras.build("mlp_tiny")
    first = publish_saved_model(model, "mlp", base_dir=tmp_path, warmup=False, write_config=True)
    config = (tmp_path / "models.config").read_text()
    wrong = {"serving_default": ({"inputs": INPUTS}, {"logits": np.zeros((2, 3), np.float32)})}
    with pytest.raises(VerificationError, match="fails as TF Serving would run it"):
        publish_saved_model(model, "mlp", base_dir=tmp_path, warmup=False, write_config=True,
                            verify={"expected": wrong})
    assert first.report is not None and list_versions(tmp_path / "mlp") == [1]
    assert sorted(p.name for p in (tmp_path / "mlp").iterdir()) == ["1"]  # no temporary directory either
    assert (tmp_path / "models.config").read_text() == config


def test_a_version_taken_meanwhile_moves_on_or_fails_when_it_was_asked_for(tmp_path, monkeypatch):
    model = bigkeras.build("mlp_tiny")
    export_saved_model(model, "mlp", base_dir=tmp_path, warmup=False, verify=False)
    # Another export published version 1 after this one listed the versions: the rename refuses to
    # replace it, and the export takes the next number.
    monkeypatch.setattr(export_lib, "list_versions", lambda _: [])
    second = export_saved_model(model, "mlp", base_dir=tmp_path, warmup=False, verify=False)
    assert second.name == "2"
    monkeypatch.undo()
    tmp = tmp_path / "mlp" / ".tmp-1-x"
    tmp.mkdir()
    with pytest.raises(FileExistsError, match="published by another export"):
        export_lib._publish(tmp, tmp_path / "mlp", 1, overwrite=False)


def test_overwrite_swaps_atomically_and_dead_exports_are_cleaned(tmp_path):
    model = bigkeras.build("mlp_tiny")
    path = export_saved_model(model, "mlp", base_dir=tmp_path, warmup=False, verify=False)
    stale = tmp_path / "mlp" / f"{export_lib.TMP_PREFIX}999999999-abc"  # a killed export's leftovers
    live = tmp_path / "mlp" / f"{export_lib.TMP_PREFIX}{os.getpid()}-live"  # one still running
    stale.mkdir()
    live.mkdir()
    before = (path / "saved_model.pb").stat().st_ino
    export_saved_model(bigkeras.build("mlp_tiny"), "mlp", base_dir=tmp_path, version=1, overwrite=True,
                       warmup=False, verify=False)
    assert (path / "saved_model.pb").stat().st_ino != before  # the new export is in place
    assert sorted(p.name for p in (tmp_path / "mlp").iterdir()) == sorted(["1", live.name])
