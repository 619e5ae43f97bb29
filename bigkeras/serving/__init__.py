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
    image_classifier_signatures,
    text_classifier_signatures,
)
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
    "export_saved_model",
    "image_classifier_signatures",
    "model_server_config",
    "read_model_config",
    "read_warmup",
    "text_classifier_signatures",
    "verify",
    "write_model_config",
    "write_warmup",
]
