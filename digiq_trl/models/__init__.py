"""Models: critic heads, VLM feature extraction and the VLM policy wrapper.

Importing this package registers ``DigiQCritic`` with ``AutoConfig``/``AutoModel``.
"""

from .critic import DigiQCritic, DigiQCriticModelConfig, DigiQCriticOutput
from .feature_cache import FEATURE_COLUMNS, cache_features, features_fingerprint
from .features import PREFIX_SHARING_MODEL_TYPES, VLMFeatureExtractor, weights_digest
from .policy import VLMPolicy
from .processing import Qwen2VLImageTextProcessor, load_processor


__all__ = [
    "FEATURE_COLUMNS",
    "PREFIX_SHARING_MODEL_TYPES",
    "DigiQCritic",
    "DigiQCriticModelConfig",
    "DigiQCriticOutput",
    "Qwen2VLImageTextProcessor",
    "VLMFeatureExtractor",
    "VLMPolicy",
    "cache_features",
    "features_fingerprint",
    "load_processor",
    "weights_digest",
]
