from .notices import silence_torchvision_notice

silence_torchvision_notice()  # before anything imports transformers

from .fingerprint import fingerprint  # noqa: E402
from .layers import CrossAttentionLayer, find_cross_attention, in_execution_order, kv_weights  # noqa: E402
from .loading import detect_family, load_pipeline  # noqa: E402
from .text import EncodedPrompts, encode, first_eot_index  # noqa: E402

__all__ = ["CrossAttentionLayer", "EncodedPrompts", "detect_family", "encode", "find_cross_attention",
           "fingerprint", "first_eot_index", "in_execution_order", "kv_weights", "load_pipeline"]
