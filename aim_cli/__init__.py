"""aim_cli: AI model weights on private storage, content-addressed and verified."""

__version__ = "0.1.0"
