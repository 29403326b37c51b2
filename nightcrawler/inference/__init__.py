"""Using a trained model: :class:`Recognizer` classifies video files from Python; ``nightcrawler-predict``
(:mod:`nightcrawler.inference.cli`, also ``tools/predict.py``) from the command line."""

from nightcrawler.inference.recognizer import (
    ClipSettings,
    Prediction,
    Recognizer,
    average_predictions,
    probabilities_from_scores,
)

__all__ = ["ClipSettings", "Prediction", "Recognizer", "average_predictions", "probabilities_from_scores"]
