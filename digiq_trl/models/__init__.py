"""Models: critic heads, VLM feature extraction and the VLM policy wrapper.

Names are imported on first use (:mod:`digiq_trl._lazy`), so the string-only helpers of this
package (e.g. :mod:`digiq_trl.models.critic_text`) load without torch. Importing
:mod:`digiq_trl.models.critic` (or reading ``DigiQCritic``) registers the critic with
``AutoConfig``/``AutoModel``.
"""

from .. import _lazy


_EXPORTS = {
    ".critic": ("DigiQCritic", "DigiQCriticModelConfig", "DigiQCriticOutput"),
    ".feature_cache": ("FEATURE_COLUMNS", "cache_features", "features_fingerprint"),
    ".features": ("VLMFeatureExtractor",),
    ".policy": ("VLMPolicy",),
    ".pretrained": ("resolve_pretrained",),
    ".processing": ("Qwen2VLImageTextProcessor", "load_processor"),
    ".scoring": ("CriticScorer",),
    ".vlm": ("PREFIX_SHARING_MODEL_TYPES", "weights_digest"),
}

__all__ = _lazy.exported_names(_EXPORTS)
__getattr__, __dir__ = _lazy.lazy_exports(__name__, _EXPORTS)
