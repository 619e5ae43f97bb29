"""Deploy to TensorFlow Serving: export, signatures, warmup, models.config, verify, clients.

    from bigkeras.serving import export_saved_model, image_classifier_signatures, verify
    path = export_saved_model(model, "cnn", signatures=image_classifier_signatures(model))
    write_model_config("saved_models")
    verify(path)
"""

from bigkeras.serving.client import GrpcClient, RestClient, ServingError, ServingUnavailable
from bigkeras.serving.config import model_server_config, read_model_config, write_model_config
from bigkeras.serving.export import export_saved_model
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
    "RestClient",
    "ServingError",
    "ServingUnavailable",
    "Signature",
    "VerificationError",
    "VerifyReport",
    "classifier_signatures",
    "default_signatures",
    "embedding_signatures",
    "export_saved_model",
    "gpt_signatures",
    "image_classifier_signatures",
    "model_server_config",
    "preprocessed_text_signatures",
    "read_model_config",
    "read_warmup",
    "teacher_forcing_examples",
    "text_classifier_signatures",
    "translate_signatures",
    "verify",
    "write_model_config",
    "write_warmup",
]
