"""Verified, atomic, versioned SavedModel export in TF Serving's layout: ``<base_dir>/<name>/<version>/``.

TF Serving polls ``<base_dir>/<name>/`` for integer-named version directories. The export is
written to a hidden temporary directory beside them (not an integer, so the server ignores
it), verified there, and renamed into place: a rename within one filesystem is atomic, so a
polling server sees either no version or a complete, verified one. The rename refuses to
replace an existing version (``renameat2(RENAME_NOREPLACE)``), so two exports racing for the
same number end as two versions.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from bigkeras import checks
from bigkeras.serving import bounds as bounds_lib
from bigkeras.serving import compatibility
from bigkeras.serving import warmup as warmup_lib
from bigkeras.serving.config import list_versions, write_model_config
from bigkeras.serving.deploy import LOW_PRECISION_TOLERANCE, deployable
from bigkeras.serving.signatures import Signature, compiled_model_calls, default_signatures
from bigkeras.serving.verify import VerifyReport, verify as run_verify

WarmupSpec = bool | Mapping[str, Sequence[Mapping[str, np.ndarray]]]
TMP_PREFIX = ".tmp-"  # <model_dir>/.tmp-<pid>-<random>: not an integer, so TF Serving ignores it


@dataclasses.dataclass(frozen=True)
class Published:
    """What ``publish_saved_model`` did: the version directory, its verification, the config."""

    path: pathlib.Path
    report: VerifyReport | None  # None when verification was skipped (``verify=False``)
    config: pathlib.Path | None  # the rewritten models.config, when asked for


def export_saved_model(model: keras.Model, name: str, **kwargs) -> pathlib.Path:
    """Export, verify and publish ``model`` to ``<base_dir>/<name>/<version>/``; return that path.

    ``publish_saved_model`` with the same arguments (``write_config`` defaults to False here),
    returning only the version directory.

    Example:
        >>> model = bigkeras.build("cnn_tiny")
        >>> export_saved_model(model, "cnn", signatures=image_classifier_signatures(model))
        PosixPath('saved_models/cnn/1')
    """
    return publish_saved_model(model, name, **kwargs).path


def publish_saved_model(
    model: keras.Model,
    name: str,
    *,
    base_dir: str | os.PathLike = "saved_models",
    version: int | None = None,
    signatures: Mapping[str, Signature] | Callable[[keras.Model], Mapping[str, Signature]] | None = None,
    warmup: WarmupSpec = True,
    overwrite: bool = False,
    quantize: str | None = None,
    max_batch_size: int | None = None,
    verify: bool | Mapping = True,
    write_config: bool = False,
    jit_compile: bool = False,
) -> Published:
    """Export ``model`` with serving signatures, verify it, then publish it in TF Serving's layout.

    The export is written to a hidden temporary directory beside the versions (a name TF
    Serving ignores), verified there as TF Serving runs it (``bigkeras.serving.verify``: a
    fresh process without Keras), and only then renamed to ``<base_dir>/<name>/<version>/``;
    ``models.config`` is rewritten after that. A server polling the directory never sees a
    version that has not verified, and a failed or killed export leaves no version behind
    (the next export removes the dead one's temporary directory).

    The rename never replaces a version: when another export took the version first, an
    automatic ``version`` moves on to the next free number, and an explicit one fails.
    ``overwrite=True`` swaps the new directory with the old one in one atomic rename.

    Besides the SavedModel, the export holds, in ``assets.extra/``: ``tf_serving_warmup_requests``
    (TF Serving replays it on load; one request per signature at each bucket row count of
    ``bounds.bucket_sizes``), ``bigkeras_expected_outputs`` (each signature's example inputs
    and the outputs the Keras model gave, which ``verify`` compares against),
    ``bigkeras_serving_compatibility.json`` (the TF Serving releases that load it) and
    ``bigkeras_request_bounds.json`` (each signature's ``RequestBounds``).

    Args:
        model: the ``keras.Model`` to export (its variables are tracked).
        name: str, the model name (the directory and the name clients request).
        base_dir: the export root that TF Serving's ``models.config`` covers.
            Default ``"saved_models"``.
        version: int, the version directory; default the next integer after the newest.
        signatures: ``{name: Signature}`` from ``bigkeras.serving.signatures``, or a function
            of the model returning them (needed when the exported model is a copy: LoRA or
            ``quantize``); default ``default_signatures(model)`` (image or plain classifier).
        warmup: ``True`` writes warmup requests from each signature's examples, at every
            bucket row count; ``{signature_name: [inputs, ...]}`` writes those; ``False`` none.
        overwrite: bool, replace an existing version directory (atomically). Default False.
        quantize: None (default), ``"int8"`` (int8 weights dequantized in the graph: the fastest
            int8 measured) or ``"int8_dynamic"`` (Keras' int8 layers): an int8 copy
            (``deploy.deployable``).
            A LoRA model is always exported with its adapters merged into the kernels.
        max_batch_size: int, rows per request for every signature (default: each
            signature's own bound, sized for the model).
        verify: True (default) verifies before publishing with the default tolerance (or
            ``deploy.LOW_PRECISION_TOLERANCE`` for a quantized or low-precision model); a
            dict passes those keyword arguments to ``verify``; False skips verification.
        write_config: bool, rewrite ``<base_dir>/models.config`` after publishing.
        jit_compile: bool, compile each signature's model call and decode loop with XLA
            (string ops stay outside): rows are padded to ``bounds.bucket_sizes`` and prompts
            to multiples of 16 tokens, and the warmup covers every such shape, so no request
            compiles. TF Serving runs it only with ``--xla_cpu_compilation_enabled=true``
            (2.5+; the compatibility report says so and ``bigkeras serving-command`` adds it).
            Default False.

    Returns:
        ``Published(path, report, config)``.

    Raises:
        FileExistsError: ``version`` was given, exists, and ``overwrite`` is False.
        VerificationError: the export does not run as the Keras model does; nothing is published.
    """
    if not isinstance(name, str) or not name or os.sep in name or name.startswith("."):
        raise ValueError(f"`name` must be a non-empty directory name, got {name!r}.")
    if version is not None:
        checks.positive_int("version", version)
    if max_batch_size is not None:
        checks.positive_int("max_batch_size", max_batch_size)
    if not isinstance(jit_compile, bool):
        raise ValueError(f"`jit_compile` must be True or False, got {jit_compile!r}.")
    low_precision = quantize is not None or keras.backend.standardize_dtype(model.compute_dtype) != "float32"
    deployed = deployable(model, quantize=quantize)
    if deployed is not model and signatures is not None and not callable(signatures):
        raise ValueError(
            "`signatures` must be a function of the model (e.g. `lambda m: text_classifier_signatures(m, ...)`) "
            "when the export is a merged-LoRA or quantized copy of it."
        )
    model = deployed
    if callable(signatures):
        signatures = signatures(model)
    signatures = dict(signatures if signatures is not None else default_signatures(model))
    if not signatures:
        raise ValueError("`signatures` must hold at least one signature.")
    signatures = {k: dataclasses.replace(sig, bounds=sig.bounds.with_max_batch_size(max_batch_size))
                  for k, sig in signatures.items()}
    model_dir = pathlib.Path(base_dir) / name
    if version is not None and (model_dir / str(version)).exists() and not overwrite:
        raise FileExistsError(f"{model_dir / str(version)} exists; pass overwrite=True or another `version`.")
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(model_dir)

    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=model_dir))
    try:
        _write_archive(model, signatures, tmp, jit_compile)
        compatibility.write_report(tmp)
        bounds_lib.write_bounds(tmp, {k: sig.bounds for k, sig in signatures.items()})
        expected = [(sig_name, sig.examples, _run(sig, sig.examples)) for sig_name, sig in signatures.items()]
        warmup_lib.write_expected(tmp, name, expected)
        requests = _warmup_requests(signatures, warmup, jit_compile)
        if requests:
            warmup_lib.write_warmup(tmp, name, requests)
        report = None
        if verify is True or isinstance(verify, Mapping):  # {} verifies with the default tolerance
            options = dict(verify) if isinstance(verify, Mapping) else (LOW_PRECISION_TOLERANCE if low_precision else {})
            report = run_verify(tmp, model_name=name, **options)
        final = _publish(tmp, model_dir, version, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    config = write_model_config(base_dir) if write_config else None
    return Published(final, report, config)


def remove_leftovers(model_dir: pathlib.Path) -> list[pathlib.Path]:
    """Delete the temporary directories of exports whose process is gone (killed mid-export).

    Returns:
        The directories removed.
    """
    removed = []
    for path in model_dir.glob(f"{TMP_PREFIX}*"):
        pid = path.name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _write_archive(model: keras.Model, signatures: Mapping[str, Signature], path: pathlib.Path,
                   jit_compile: bool = False) -> None:
    archive = keras.export.ExportArchive()
    tracked = {}
    for resource in (model, *(r for sig in signatures.values() for r in sig.resources)):
        tracked.setdefault(id(resource), resource)
    for resource in tracked.values():
        # Lookup tables (tokenizers, vectorizers) must be tracked explicitly. A model's weights
        # need not: the archive saves every variable the endpoints use, and `track()` would
        # save each one a second time under another path (a SavedModel twice the model's size).
        if not isinstance(resource, keras.Model):
            archive.track(resource)
    for sig_name, sig in signatures.items():
        # A dict input signature gives the SavedModel signature these input names. Traced here,
        # inside the XLA context when asked; the archive saves this trace.
        endpoint = tf.function(_takes_dict(sig), input_signature=[dict(sig.inputs)], autograph=False)
        with compiled_model_calls(sig.bounds.max_rows) if jit_compile else contextlib.nullcontext():
            endpoint.get_concrete_function()
        archive.add_endpoint(sig_name, endpoint)
    archive.write_out(os.fspath(path), verbose=False)
    if jit_compile and not compatibility.xla_functions(path):
        raise ValueError(f"`jit_compile=True`, but none of the signatures {sorted(signatures)} compiles a model call "
                         "with XLA (a signature factory that does not support it).")


def _takes_dict(sig: Signature):
    def endpoint(inputs):
        return sig(**inputs)  # the request bounds first, then the signature

    return endpoint


def _run(sig: Signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    tensors = {k: tf.constant(v, dtype=sig.inputs[k].dtype) for k, v in inputs.items()}
    return {k: np.asarray(v) for k, v in sig(**tensors).items()}


def _warmup_requests(signatures: Mapping[str, Signature], warmup: WarmupSpec, jit_compile: bool = False):
    if warmup is True:  # every signature at every bucket row count, so no request size is a first
        # An XLA export compiles per shape: each bucket row count with each shape variant.
        return [(sig_name, {**_rows(sig, rows), **variant}) for sig_name, sig in signatures.items()
                for rows in bounds_lib.bucket_sizes(sig.bounds.max_rows)
                for variant in ((sig.shape_variants or ({},)) if jit_compile else ({},))]
    if warmup is False or warmup is None:
        return []
    if not isinstance(warmup, Mapping):
        raise ValueError(f"`warmup` must be True, False or {{signature: [inputs, ...]}}, got {type(warmup).__name__}.")
    unknown = sorted(set(warmup) - set(signatures))
    if unknown:
        raise ValueError(f"`warmup` names signatures {unknown}; the export has {sorted(signatures)}.")
    return [(sig_name, inputs) for sig_name, batch in warmup.items() for inputs in batch]


def _rows(sig: Signature, rows: int) -> dict[str, np.ndarray]:
    """The signature's examples repeated or cut to ``rows`` rows (scalar inputs as they are)."""
    out = {}
    for key, value in sig.examples.items():
        value = np.asarray(value)
        if sig.inputs[key].shape.rank:
            value = value[np.arange(rows) % len(value)]
        out[key] = value
    return out


def _publish(tmp: pathlib.Path, model_dir: pathlib.Path, version: int | None, overwrite: bool) -> pathlib.Path:
    """Rename ``tmp`` to a version directory without ever replacing one another export published."""
    if version is not None:
        final = model_dir / str(version)
        if overwrite and final.exists():
            _rename_exchange(tmp, final)  # one atomic swap: the old version is now at `tmp`
            return final
        if not _rename_noreplace(tmp, final):
            raise FileExistsError(f"{final} was published by another export while this one ran; pick another `version`.")
        return final
    candidate = (list_versions(model_dir) or [0])[-1] + 1
    while not _rename_noreplace(tmp, model_dir / str(candidate)):  # another export published it first
        candidate += 1
    return model_dir / str(candidate)


def _rename_noreplace(source: pathlib.Path, target: pathlib.Path) -> bool:
    """Rename unless ``target`` exists (atomically on Linux: ``renameat2(RENAME_NOREPLACE)``)."""
    if _renameat2 is None:  # elsewhere: a check and a rename (a race window remains)
        if target.exists():
            return False
        os.rename(source, target)
        return True
    if _renameat2(source, target, _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        return False
    raise OSError(err, os.strerror(err), os.fspath(target))


def _rename_exchange(source: pathlib.Path, target: pathlib.Path) -> None:
    """Swap two directories in one step (``RENAME_EXCHANGE``); elsewhere two renames."""
    if _renameat2 is not None:
        if _renameat2(source, target, _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fspath(target))
    trash = target.with_name(f"{TMP_PREFIX}{os.getpid()}-old")
    os.rename(target, trash)
    os.rename(source, target)
    os.rename(trash, source)


def _load_renameat2():
    """libc's ``renameat2`` (Linux, glibc 2.28+), or None."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100

    def renameat2(source, target, flags):
        return fn(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), flags)

    return renameat2


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_renameat2 = _load_renameat2()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
