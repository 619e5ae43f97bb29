"""Deploy to TensorFlow Serving: export, signatures, warmup, models.config, verify, clients.

    from bigkeras.serving import export_saved_model, image_classifier_signatures, verify
    path = export_saved_model(model, "cnn", signatures=image_classifier_signatures(model))  # verified, then published
    write_model_config("saved_models")
    verify(path, tf_serving="2.19")   # as TF Serving runs it; raises if 2.19 lacks an op it needs
"""

from bigkeras.serving.client import GrpcClient, RestClient, ServingError, ServingUnavailable
from bigkeras.serving.compatibility import IncompatibleRelease, check_release, compatibility_report, load_report
from bigkeras.serving.config import model_server_config, read_model_config, write_model_config
from bigkeras.serving.deploy import deployable
from bigkeras.serving.bounds import RequestBounds, load_bounds
from bigkeras.serving.export import Published, export_saved_model, publish_saved_model
from bigkeras.serving.signatures import (
    Signature,
    classifier_signatures,
    default_signatures,
    embedding_signatures,
    gpt_signatures,
    image_classifier_signatures,
    preprocessed_text_signatures,
    text_classifier_signatures,
)
from bigkeras.serving.seq2seq import teacher_forcing_examples, translate_signatures
from bigkeras.serving.verify import VerificationError, VerifyReport, verify
from bigkeras.serving.warmup import read_warmup, write_warmup

__all__ = [
    "GrpcClient",
    "IncompatibleRelease",
    "Published",
    "RequestBounds",
    "RestClient",
    "ServingError",
    "ServingUnavailable",
    "Signature",
    "VerificationError",
    "VerifyReport",
    "check_release",
    "classifier_signatures",
    "compatibility_report",
    "default_signatures",
    "deployable",
    "embedding_signatures",
    "export_saved_model",
    "gpt_signatures",
    "image_classifier_signatures",
    "load_bounds",
    "load_report",
    "model_server_config",
    "preprocessed_text_signatures",
    "publish_saved_model",
    "read_model_config",
    "read_warmup",
    "teacher_forcing_examples",
    "text_classifier_signatures",
    "translate_signatures",
    "verify",
    "write_model_config",
    "write_warmup",
]
