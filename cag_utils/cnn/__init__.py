"""Stage 1 of CAG-VLM: a ConvNeXt that labels angiography frames with one of six classes
(laterality LCA/RCA x key-frame category better/bad/others).

Modules: ``model`` (timm ConvNeXt, 6-way head), ``data`` (frame validation, transforms,
Dataset), ``train`` (accelerate training loop, checkpoints, resume), ``evaluate``
(inference, scikit-learn metrics, figures), ``gradcam`` (Grad-CAM heatmaps).
"""
from cag_utils.cnn.data import FrameDataset, build_transform, check_frames, validate_frame
from cag_utils.cnn.evaluate import classification_metrics, plot_confusion_matrix, plot_training_curves, predict
from cag_utils.cnn.model import build_model
from cag_utils.cnn.train import DEFAULT_CONFIG, PAPER_CONFIG, TrainResult, load_trained, train_classifier

__all__ = [
    "DEFAULT_CONFIG",
    "PAPER_CONFIG",
    "FrameDataset",
    "TrainResult",
    "build_model",
    "build_transform",
    "check_frames",
    "classification_metrics",
    "load_trained",
    "plot_confusion_matrix",
    "plot_training_curves",
    "predict",
    "train_classifier",
    "validate_frame",
]
