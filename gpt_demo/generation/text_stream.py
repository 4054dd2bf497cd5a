"""Token ids in, safe text deltas out: no split characters, no stop text ever shown.

    >>> from transformers import AutoTokenizer                     # doctest: +SKIP
    >>> tracker = StopTextTracker(tokenizer, stop=("\\n\\n",))       # doctest: +SKIP
    >>> tracker.push(token_id)                                       # doctest: +SKIP
    'Hello'

Decoding a token on its own is wrong for byte-level BPE (an emoji spans several
tokens) and for SentencePiece (leading spaces depend on the previous token), so we
decode a short window and emit only the new, complete characters (the approach
vLLM's detokenizer uses). Text that could still turn out to be the start of a stop
sequence is held back until it can't.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"  # what decode() yields for an incomplete UTF-8 sequence


class StopTextTracker:
    """Turns one sequence's token ids into text deltas, ending at the first stop sequence."""

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.text = ""  # all complete text decoded so far
        self.emitted = 0  # how many characters of self.text have been handed out
        self.stopped = False
        self._prefix = 0  # window start (token index) for incremental decoding
        self._read = 0  # tokens already turned into self.text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _detokenize(self) -> None:
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop sequence."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text) - self.emitted), best, -1):
                if self.text.endswith(s[:k]):
                    best = k
                    break
        return best

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text that is now safe to show (maybe '')."""
        if self.stopped:
            return ""
        self.ids.append(int(token_id))
        self._detokenize()
        if self.stop:
            start = max(0, self.emitted - max(len(s) for s in self.stop))
            hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True
                return self._take(len(self.text))
        return self._take(len(self.text) - self._held_back())

    def finish(self) -> str:
        """Generation ended without a stop sequence: release anything held back."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        end = max(end, self.emitted)
        delta = self.text[self.emitted : end]
        self.emitted = end
        return delta
