"""erasekit: erase concepts from text-to-image diffusion models, attack the result, measure it."""
from .version import __version__
from .edits import Edit, applied_edits, load_edit  # noqa: E402
from .errors import EditError, ErasekitError, ModelError, PromptError  # noqa: E402
from .sampling import generate  # noqa: E402
from .methods import METHODS, erase  # noqa: E402
from .harden import harden  # noqa: E402
from .models import encode, find_cross_attention, load_pipeline  # noqa: E402

__all__ = ["METHODS", "Edit", "EditError", "ErasekitError", "ModelError", "PromptError", "__version__",
           "applied_edits", "encode", "erase", "find_cross_attention", "generate", "harden", "load_edit",
           "load_pipeline"]
