"""Text from outside a process as a log line or a gRPC status message shows it: one line,
encodable, bounded, with the reason after a quoted value kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopchain.safe_text import (
    MAX_DETAILS_BYTES,
    MAX_PLACE_KEY,
    bounded,
    json_place,
    one_line,
    status_details,
    without_paths,
)

BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1b", "\x85", "\u2028", "\u2029", "\x00", "\x7f"]


def _grpc_size(text: str) -> int:
    """Bytes of `text` as gRPC sends a status message: printable ASCII but '%' as itself, every
    other byte of its UTF-8 as %XX."""
    return sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in text.encode("utf-8"))


@pytest.mark.parametrize("char", BREAKS)
def test_a_line_break_or_control_character_is_written_as_an_escape(char: str) -> None:
    shown = one_line(f"refused {char}2026-12-03 00:00:00,000 ERROR forged")
    assert shown.splitlines() == [shown] and char not in shown
    assert shown.startswith("refused \\") and shown.endswith("2026-12-03 00:00:00,000 ERROR forged")


@pytest.mark.parametrize("char", ["\u202e", "\u202d", "\u2066", "\u2069", "\u200f", "\u061c"])
def test_a_character_that_reorders_the_text_shown_is_written_as_an_escape(char: str) -> None:
    """A direction override shows "/api/v3/\u202etluafed" as ".../default" (log review)."""
    shown = one_line(f"refused /api/v3/{char}tluafed_niahcpool from 127.0.0.1")
    assert char not in shown and f"\\u{ord(char):04x}tluafed" in shown


def test_a_lone_surrogate_is_written_as_an_escape_and_the_rest_is_kept() -> None:
    shown = one_line("key \ud800 and \U0001f600 and tab\there")
    assert shown == "key \\ud800 and \U0001f600 and tab\there"
    shown.encode("utf-8")


@given(st.text())
def test_any_text_becomes_one_encodable_line(text: str) -> None:
    shown = one_line(text)
    assert len(shown.splitlines()) <= 1
    shown.encode("utf-8")
    if text.isprintable():
        assert shown == text


def test_a_long_value_is_cut_in_its_middle_and_says_its_length() -> None:
    message = "channel '" + "c" * 100_000 + "' is not served by this peer"
    shown = bounded(message, 900)
    assert len(shown) < 1000
    assert shown.startswith("channel 'ccc") and shown.endswith("' is not served by this peer")
    assert f"({len(message)} characters)" in shown
    assert bounded("short", 900) == "short"


@pytest.mark.parametrize(
    "message",
    [
        "x" * 100_000,
        "%" * 100_000,  # sent as %25 each
        "\U0001f600" * 50_000,  # 4 bytes of UTF-8 each, sent as 12
        "\n" * 20_000,  # escaped first (2 characters each)
        "a" * (MAX_DETAILS_BYTES - 1),
    ],
    ids=["ascii", "percent", "emoji", "newlines", "just-under"],
)
def test_a_status_message_fits_grpc_trailers(message: str) -> None:
    shown = status_details(message)
    assert _grpc_size(shown) <= MAX_DETAILS_BYTES and "\n" not in shown
    if len(message) < MAX_DETAILS_BYTES and message.isprintable():
        assert shown == message


@given(st.text(max_size=5000))
def test_any_status_message_fits_grpc_trailers(message: str) -> None:
    assert _grpc_size(status_details(message)) <= MAX_DETAILS_BYTES


def test_a_node_s_log_keeps_hostile_text_on_its_line_and_its_tracebacks_whole(
    tmp_path: Path,
) -> None:
    """A process logging as every loopchain process does (setup_logging, to stderr and a file)."""
    path = tmp_path / "node.log"
    script = f"""
import logging
from loopchain.configure import load_config, setup_logging
config = load_config(environ={{}}, overrides={{"LOG_FILE_PATH": {str(path)!r}}})
setup_logging(config, debug=False, process="node")
log = logging.getLogger("loopchain.test")
log.warning("refused %s", "key\\n2026-12-03 00:00:00,000 ERROR   [peer:1] forged\\ud800" + "k" * 20000)
try:
    raise ValueError("one\\ntwo")
except ValueError:
    log.exception("failed")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    text = path.read_text(encoding="utf-8")
    for output in (text, done.stderr):
        lines = output.splitlines()
        assert "Logging error" not in output, output[:2000]
        assert not any(line.startswith("2026-12-03 00:00:00") for line in lines), output[:2000]
        (refused,) = [line for line in lines if "refused key" in line]
        assert "\\n2026-12-03" in refused and "\\ud800" in refused and len(refused) < 9000
        assert "characters)..." in refused  # 20,000 k's are cut
        start = lines.index(next(line for line in lines if line.endswith("failed")))
        assert lines[start + 1] == "Traceback (most recent call last):"  # still whole
        assert lines[-2:] == ["ValueError: one", "two"]


@pytest.mark.parametrize(
    ("parts", "place"),
    [
        (("peers", 3, "weight"), "peers[3].weight"),
        (("loopchain_default", "peers", 0), "loopchain_default.peers[0]"),
        (("groups", "g 1", "weight"), 'groups["g 1"].weight'),
        (("ch.1-b", "peers"), '["ch.1-b"].peers'),
        ((0, "a"), "[0].a"),
        (("",), '[""]'),
        (("x" * 300,), '["' + "x" * 37 + '..."]'),
        (("a\nb", "c"), '["a\\nb"].c'),
        ((), ""),
    ],
)
def test_a_json_place_names_keys_and_indexes_on_one_bounded_line(parts: tuple, place: str) -> None:
    assert json_place(parts) == place


@given(st.lists(st.one_of(st.text(), st.integers(0, 10**6)), max_size=8))
def test_any_json_place_is_one_bounded_line(parts: list) -> None:
    place = json_place(parts)
    assert place.splitlines() in ([place], []) and len(place) <= len(parts) * (MAX_PLACE_KEY + 5)
    place.encode("utf-8")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "SCORE state store failed: LevelDB store at /var/lib/lc/score_state is corrupt: x",
            "SCORE state store failed: LevelDB store at <path> is corrupt: x",
        ),
        (
            "last error: UNKNOWN: unix:/tmp/loopchain-score-1-ab/score.sock: No such file",
            "last error: UNKNOWN: unix:<path>: No such file",
        ),
        ("package.json not found in '/data/score/pkg'", "package.json not found in '<path>'"),
        ("(/x/y) [/a] path=/etc/passwd", "(<path>) [<path>] path=<path>"),
        ("/root/abs at the start", "<path> at the start"),
        ("unix:///tmp/loopchain-score-1/score.sock: gone", "unix:<path>: gone"),
        ("stores a,/var/lib/x", "stores a,<path>"),
        ("1/2 and 16/32, http://host/a/b and a // b", "1/2 and 16/32, http://host/a/b and a // b"),
    ],
)
def test_absolute_paths_are_left_out_of_text_told_to_clients(text: str, shown: str) -> None:
    assert without_paths(text) == shown


@given(st.text(max_size=200))
def test_no_absolute_path_after_a_space_survives(text: str) -> None:
    assert " /a" not in without_paths(text + " /a/b")
