"""Floor 5, evaluation of frozen representations: linear probe (MAE) and weighted k-NN (DINO),
on features extracted once from any model with `features(images, pool) -> (N, D)`, and the
side-by-side comparison of a pretrained model with its random-init twin; PSNR and the
reconstruction / codebook-usage evaluation of image tokenizers."""
from .features import extract_features
from .knn import KNNResult, knn_accuracy, knn_scores
from .linprobe import LinearProbeHead, LinearProbeResult, linear_probe
from .psnr import psnr
from .report import ProbeComparison, ProbeReport, compare_with_random_init, format_comparison_table, probe_model
from .tokenizer import TokenizerReport, evaluate_tokenizer
from .finetune import (FineTuneClassifier, FineTuneComparison, FineTuneResult, compare_finetune_with_random_init,
                       finetune, format_finetune_table)
from .layerwise import (LayerwiseComparison, LayerwiseRow, block_features, compare_layerwise_with_random_init,
                        format_layerwise_table, layerwise_probe)
from .mixup import Mixup

__all__ = [
    "extract_features",
    "KNNResult",
    "knn_accuracy",
    "knn_scores",
    "LinearProbeHead",
    "LinearProbeResult",
    "linear_probe",
    "ProbeComparison",
    "ProbeReport",
    "compare_with_random_init",
    "format_comparison_table",
    "probe_model",
    "psnr",
    "TokenizerReport",
    "evaluate_tokenizer",
    "FineTuneClassifier",
    "FineTuneComparison",
    "FineTuneResult",
    "compare_finetune_with_random_init",
    "finetune",
    "format_finetune_table",
    "LayerwiseComparison",
    "LayerwiseRow",
    "block_features",
    "compare_layerwise_with_random_init",
    "format_layerwise_table",
    "layerwise_probe",
    "Mixup",
]
