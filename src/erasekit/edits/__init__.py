from .adapter import ADAPTERS, AdapterEdit, attach, attached, muted, register_adapter
from .base import EDIT_KINDS, Edit, load_edit, register_edit_kind
from .sampling_time import SESSIONS, SamplingSession, SamplingTimeEdit, active_session, register_session
from .state import applied_edits, edit_state
from .safe_adapter import SafeAdapter, safe_adapters
from .weight_delta import WeightDelta

__all__ = ["ADAPTERS", "AdapterEdit", "EDIT_KINDS", "Edit", "SESSIONS", "SafeAdapter", "SamplingSession",
           "SamplingTimeEdit", "WeightDelta", "active_session", "applied_edits", "attach", "attached", "muted",
           "edit_state", "load_edit", "register_adapter", "register_edit_kind", "register_session", "safe_adapters"]
