"""Stop strings matched across token boundaries, on streamed text.

The matcher receives text deltas and releases only text that can no longer be part of a stop string: the
longest tail of the text seen so far that is a prefix of some stop string is held back until the next delta
decides. When a stop string appears, the text before it is released and the rest (the stop string and
anything after it) is dropped. It knows nothing of tokens.
"""

from __future__ import annotations


class StopStringMatcher:
    def __init__(self, stop_strings: tuple[str, ...]) -> None:
        self.stop_strings = stop_strings
        self._held = ""

    def _held_back_length(self, text: str) -> int:
        """Length of the longest tail of `text` that some stop string starts with (without being complete)."""
        longest = 0
        for stop in self.stop_strings:
            for length in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:length]):
                    longest = length
                    break
        return longest

    def feed(self, text: str, match: bool = True) -> tuple[str, bool]:
        """Add a delta; returns (text now safe to show, whether a stop string ended the text).

        With `match=False` (before `min_tokens`), everything is released and nothing can stop.
        """
        buffer = self._held + text
        if not match:
            self._held = ""
            return buffer, False
        starts = [index for index in (buffer.find(stop) for stop in self.stop_strings) if index >= 0]
        if starts:
            self._held = ""
            return buffer[: min(starts)], True
        keep = self._held_back_length(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """Release what is held back (generation ended without completing a stop string)."""
        held, self._held = self._held, ""
        return held
