from .fingerprint import fingerprint
from .layers import CrossAttentionLayer, find_cross_attention, in_execution_order
from .loading import detect_family, load_pipeline
from .text import EncodedPrompts, encode, first_eot_index

__all__ = ["CrossAttentionLayer", "EncodedPrompts", "detect_family", "encode", "find_cross_attention",
           "fingerprint", "first_eot_index", "in_execution_order", "load_pipeline"]
