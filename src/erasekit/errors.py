"""User-facing errors: the CLI prints their message without a traceback."""


class ErasekitError(Exception):
    """Base class for errors caused by the user's input (a path, a file, an argument)."""


class ModelError(ErasekitError):
    """The model cannot be loaded or is not one erasekit can work with."""


class EditError(ErasekitError):
    """An Edit cannot be loaded, or does not fit the model it is applied to."""


class PromptError(ErasekitError):
    """Prompts are missing or unusable."""


class NotSupportedError(ErasekitError, NotImplementedError):
    """What was asked is not implemented for this kind of model (e.g. a white-box attack on SDXL)."""


class AttackError(ErasekitError):
    """An attack cannot run on what it was given (images, token budget) or its optimisation failed (NaN loss)."""
