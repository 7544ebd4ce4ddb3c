"""Floor 5, evaluation of frozen representations: linear probe (MAE) and weighted k-NN (DINO),
on features extracted once from any model with `features(images, pool) -> (N, D)`; few-shot,
fine-tuning and layer-wise probes; the side-by-side comparison of a pretrained model with its
random-init twin over any of these protocols; PSNR and the reconstruction / codebook-usage
evaluation of image tokenizers."""
from .features import extract_features
from .knn import KNNResult, knn_accuracy, knn_scores
from .linprobe import LinearProbeHead, LinearProbeResult, linear_probe
from .psnr import psnr
from .comparison import Comparison, ProbeProtocol, compare_with_random_init, format_comparison_table
from .protocols import make_protocol
from .report import FrozenProbes, ProbeComparison, ProbeReport, probe_model, random_init_like
from .tokenizer import TokenizerReport, evaluate_tokenizer
from .fewshot import FewShot, FewShotRow, fewshot_probe
from .finetune import FineTune, FineTuneClassifier, FineTuneResult, finetune
from .layerwise import Layerwise, LayerwiseRow, block_features, layerwise_probe
from .mixup import Mixup

__all__ = [
    "extract_features",
    "KNNResult",
    "knn_accuracy",
    "knn_scores",
    "LinearProbeHead",
    "LinearProbeResult",
    "linear_probe",
    "Comparison",
    "ProbeProtocol",
    "compare_with_random_init",
    "format_comparison_table",
    "make_protocol",
    "FrozenProbes",
    "ProbeComparison",
    "ProbeReport",
    "probe_model",
    "random_init_like",
    "psnr",
    "TokenizerReport",
    "evaluate_tokenizer",
    "FewShot",
    "FewShotRow",
    "fewshot_probe",
    "FineTune",
    "FineTuneClassifier",
    "FineTuneResult",
    "finetune",
    "Layerwise",
    "LayerwiseRow",
    "block_features",
    "layerwise_probe",
    "Mixup",
]
