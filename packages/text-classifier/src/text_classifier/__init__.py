"""text-classifier: LoRA text classification. `Classifier` is imported lazily (no torch at package import)."""

__version__ = "0.1.0"
__all__ = ["Classifier", "__version__"]


def __getattr__(name: str):
    if name == "Classifier":
        from .predict import Classifier

        return Classifier
    raise AttributeError(f"module 'text_classifier' has no attribute {name!r}")
