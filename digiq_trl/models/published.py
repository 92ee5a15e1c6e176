"""The published architectures of the real checkpoints the real-data configs use, so that their
shapes (and a model on the ``meta`` device) are known without downloading anything.

The numbers are those of each checkpoint's ``config.json`` on the Hub (huggingface.co/<hub_id>),
read from public copies: Qwen2-VL-2B-Instruct in UbiquitousLearning/mllm
(mllm/models/qwen2vl/configuration_qwen2vl.hpp), Qwen2.5-VL-3B-Instruct in
zhanggaojian/Qwen2.5-VL-3B-LLMQ_Samples (models/Qwen2.5-VL-3B-Instruct/config.json) and
Qwen2.5-VL-7B-Instruct in Harrison-HXLiu/vlm_api_test (models/Qwen2.5-VL-7B-Instruct/config.json).
``benchmarks/real_size.py`` builds them with random weights; ``digiq-trl train --dry_run`` sizes
their memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PublishedArchitecture:
    """A checkpoint's architecture: its ``model_type`` and the text and vision sub-configs."""

    model_type: str
    text: dict[str, Any]
    vision: dict[str, Any]
    tie_word_embeddings: bool

    def config(self, **text_overrides: Any) -> Any:
        """The checkpoint's ``transformers`` config (``text_overrides`` replace text fields)."""
        from transformers import AutoConfig

        return AutoConfig.for_model(self.model_type, text_config={**self.text, **text_overrides},
                                    vision_config=dict(self.vision), tie_word_embeddings=self.tie_word_embeddings)


_QWEN2_5_VISION = dict(
    depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, hidden_act="silu", patch_size=14,
    spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
)
_MROPE = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]}

PUBLISHED_ARCHITECTURES: dict[str, PublishedArchitecture] = {
    "Qwen/Qwen2-VL-2B-Instruct": PublishedArchitecture(
        model_type="qwen2_vl",
        text=dict(
            vocab_size=151_936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
            num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32_768, rms_norm_eps=1e-6,
            rope_parameters=_MROPE,
        ),
        vision=dict(
            depth=32, embed_dim=1280, hidden_size=1536, mlp_ratio=4, num_heads=16, hidden_act="quick_gelu",
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
        ),
        tie_word_embeddings=True,
    ),
    "Qwen/Qwen2.5-VL-3B-Instruct": PublishedArchitecture(
        model_type="qwen2_5_vl",
        text=dict(
            vocab_size=151_936, hidden_size=2048, intermediate_size=11_008, num_hidden_layers=36,
            num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128_000, rms_norm_eps=1e-6,
            rope_parameters=_MROPE,
        ),
        vision=dict(_QWEN2_5_VISION, out_hidden_size=2048),
        tie_word_embeddings=True,
    ),
    "Qwen/Qwen2.5-VL-7B-Instruct": PublishedArchitecture(
        model_type="qwen2_5_vl",
        text=dict(
            vocab_size=152_064, hidden_size=3584, intermediate_size=18_944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128_000, rms_norm_eps=1e-6,
            rope_parameters=_MROPE,
        ),
        vision=dict(_QWEN2_5_VISION, out_hidden_size=3584),
        tie_word_embeddings=False,
    ),
}
"""Published architectures by Hub id."""
