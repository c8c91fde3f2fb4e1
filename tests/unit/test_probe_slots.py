"""The RadioStation's target checks in flight (probe.ProbeSlots): a probe that fails costs its
caller nothing, so one caller, or one key, must not hold every slot."""

from __future__ import annotations

from loopchain.radiostation.probe import MAX_PROBES, MAX_PROBES_PER_SOURCE, ProbeSlots


def test_one_check_at_a_time_for_a_peer_id() -> None:
    slots = ProbeSlots()
    slots.take("hx1", "10.0.0.1")
    refusal = slots.refusal("hx1", "10.0.0.2")  # from anywhere
    assert refusal is not None and "hx1 is being checked already" in refusal
    assert slots.refusal("hx2", "10.0.0.1") is None
    slots.give_back("hx1", "10.0.0.1")
    assert slots.refusal("hx1", "10.0.0.1") is None and slots.count == 0


def test_a_source_holds_at_most_its_share_and_the_others_still_register() -> None:
    slots = ProbeSlots()
    for n in range(MAX_PROBES_PER_SOURCE):
        assert slots.refusal(f"hx{n}", "10.0.0.1") is None
        slots.take(f"hx{n}", "10.0.0.1")
    refusal = slots.refusal("hxnew", "10.0.0.1")
    assert refusal is not None and "MAX_PROBES_PER_SOURCE" in refusal and "10.0.0.1" in refusal
    assert slots.refusal("hxnew", "10.0.0.2") is None  # another source
    slots.give_back("hx0", "10.0.0.1")
    assert slots.refusal("hxnew", "10.0.0.1") is None


def test_the_station_checks_at_most_max_probes_whatever_the_sources() -> None:
    slots = ProbeSlots()
    for n in range(MAX_PROBES):
        source = f"10.0.{n // MAX_PROBES_PER_SOURCE}.1"
        assert slots.refusal(f"hx{n}", source) is None
        slots.take(f"hx{n}", source)
    refusal = slots.refusal("hxnew", "10.9.9.9")
    assert refusal is not None and "(MAX_PROBES)" in refusal
    for n in range(MAX_PROBES):
        slots.give_back(f"hx{n}", f"10.0.{n // MAX_PROBES_PER_SOURCE}.1")
    assert slots.count == 0 and slots.refusal("hxnew", "10.9.9.9") is None
