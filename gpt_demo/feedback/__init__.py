"""Human feedback: the rankings store and its preference pairs (see ``store.py``)."""

from .pairs import MAX_K, MIN_K, check_ranks, expand_ranking, verdict_ranks
from .store import EXPORT_FORMATS, AlreadyStored, FeedbackStore, Ranking, content_hash, default_path

__all__ = ["EXPORT_FORMATS", "MAX_K", "MIN_K", "AlreadyStored", "FeedbackStore", "Ranking", "check_ranks",
           "content_hash", "default_path", "expand_ranking", "verdict_ranks"]
