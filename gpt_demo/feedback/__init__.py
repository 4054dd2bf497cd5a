"""Human feedback: the rankings store, its preference pairs and the arena leaderboard.

    >>> from gpt_demo.feedback import FeedbackStore
    >>> from gpt_demo.feedback.leaderboard import leaderboard
    >>> store = FeedbackStore(":memory:")
    >>> store.add_battle("Say hi", "Hello!", "Go away.", "a", model_a="big", model_b="small")
    1
    >>> [row.model for row in leaderboard(store.battles(), bootstrap=0).rows]
    ['big', 'small']

``store.py`` holds the votes, ``pairs.py`` turns rankings into preference pairs, and
``leaderboard.py`` (numpy; import it by name) rates the models of the cross-model votes.
"""

from .pairs import MAX_K, MIN_K, check_ranks, expand_ranking, verdict_ranks
from .store import (EXPORT_FORMATS, AlreadyStored, Battle, FeedbackStore, Ranking, check_model_id, content_hash,
                    default_path)

__all__ = ["EXPORT_FORMATS", "MAX_K", "MIN_K", "AlreadyStored", "Battle", "FeedbackStore", "Ranking",
           "check_model_id", "check_ranks", "content_hash", "default_path", "expand_ranking", "verdict_ranks"]
