"""Classifier zoo: CIFAR ResNets, WRNs and VGGs that load the public DFKD teacher checkpoints.

    model = create_model("resnet20", num_classes=10)
    model, meta = load_classifier("teacher.safetensors")
"""

# Importing the architecture modules registers their models.
from fastad.models import resnet_cifar, resnet_dafl, vgg, wrn  # noqa: F401
from fastad.models.checkpoint import load_classifier, load_weights, read_classifier_meta, save_classifier
from fastad.models.registry import CLASSIFIER_LAYOUT, Classifier, create_model, list_models, register_model

__all__ = [
    "CLASSIFIER_LAYOUT",
    "Classifier",
    "create_model",
    "list_models",
    "register_model",
    "load_weights",
    "save_classifier",
    "load_classifier",
    "read_classifier_meta",
]
