"""Cost of the answer checks per streamed piece (standalone: `python benchmarks/answer_checks.py`).

Feeds a 540-character coaching answer to ``AnswerWatch`` in 4-character pieces (what a local model streams: about
one token each), checks included, and prints the median time per piece over 21 runs.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from upcoach.coaching.answer_checks import AnswerWatch  # noqa: E402

QUESTION = "How do I drink more water during the day?"
ANSWER = (
    "Keep a refillable water bottle on your desk and finish it by lunch. Drink a glass of water with every meal. "
    "Set a gentle reminder on your phone every two hours to take a few sips. "
) * 3


def per_piece_us(runs: int = 21, size: int = 4) -> float:
    pieces = [ANSWER[i : i + size] for i in range(0, len(ANSWER), size)]
    times = []
    for _ in range(runs):
        watch = AnswerWatch(QUESTION, "Drink water with meals")
        started = time.perf_counter()
        for piece in pieces:
            watch.feed(piece)
        watch.finish()
        times.append((time.perf_counter() - started) / len(pieces) * 1e6)
    return statistics.median(times)


if __name__ == "__main__":
    print(f"answer checks: {per_piece_us():.1f} µs per 4-character piece (median of 21 runs)")
