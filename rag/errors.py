"""User-facing errors: the CLI prints their message as one line, never a traceback."""


class MmragError(Exception):
    """An error whose message is a complete, readable sentence for the user."""


class ModelUnavailableError(MmragError):
    """A model (CLIP, text embedder, VLM) could not be loaded or reached."""


class StoreUnavailableError(MmragError):
    """Milvus (embedded or server) could not be opened or reached."""


class VLMUnavailableError(MmragError):
    """An OpenAI-compatible VLM endpoint is not configured, unreachable or rejected the call."""
