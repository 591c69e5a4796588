from .adapter import ADAPTERS, AdapterEdit, register_adapter
from .base import EDIT_KINDS, Edit, applied_edits, load_edit, register_edit_kind
from .processor import PROCESSORS, InferenceSession, ProcessorEdit, active_session, register_processor
from .weight_delta import WeightDelta

__all__ = ["ADAPTERS", "AdapterEdit", "EDIT_KINDS", "Edit", "InferenceSession", "PROCESSORS", "ProcessorEdit",
           "WeightDelta", "active_session", "applied_edits", "load_edit", "register_adapter", "register_edit_kind",
           "register_processor"]
