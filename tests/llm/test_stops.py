from __future__ import annotations

from upcoach.llm.stops import StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    out = []
    for piece in pieces:
        emit, stopped = matcher.feed(piece)
        out.append(emit)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_no_stops_passes_text_through() -> None:
    assert feed_all(StopMatcher(()), ["Hel", "lo"]) == ("Hello", False)


def test_stop_split_across_pieces_is_cut_before_it() -> None:
    assert feed_all(StopMatcher(["END"]), ["one E", "N", "D two"]) == ("one ", True)


def test_partial_match_is_held_then_released() -> None:
    matcher = StopMatcher(["\nUser:"])
    emit, stopped = matcher.feed("fine\nUs")
    assert (emit, stopped) == ("fine", False)
    emit, stopped = matcher.feed("eful tip")
    assert (emit, stopped) == ("\nUseful tip", False)


def test_flush_releases_held_prefix_at_end() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.feed("done #") == ("done ", False)
    assert matcher.flush() == "#"


def test_earliest_of_several_stops_wins() -> None:
    assert feed_all(StopMatcher(["b", "a"]), ["xxab"]) == ("xx", True)
