"""Human feedback: the rankings store and its preference pairs (see ``store.py``)."""

from .pairs import check_ranks, expand_ranking, verdict_ranks
from .store import EXPORT_FORMATS, FeedbackStore, Ranking, default_path

__all__ = ["EXPORT_FORMATS", "FeedbackStore", "Ranking", "check_ranks", "default_path", "expand_ranking", "verdict_ranks"]
