from bridge.outbox import Outbox
from bridge.vocab import Feedback, LogEntry, Outbound, Play, SetTrackArm, SetTrackFader, Stop


def test_discrete_never_dropped_or_reordered() -> None:
    box = Outbox()
    msgs = [Play(), SetTrackArm(1, True), SetTrackArm(1, False), SetTrackArm(1, True), Stop()]
    for m in msgs:
        box.put(m)
    out, wait = box.take(0.0)
    assert out == msgs and wait is None
    assert box.take(0.0) == ([], None)


def test_continuous_latest_wins_per_key() -> None:
    box = Outbox()
    for i in range(100):
        box.put(SetTrackFader(1, i / 100))
        box.put(SetTrackFader(2, 1 - i / 100))
    out, _ = box.take(0.0)
    assert out == [SetTrackFader(1, 0.99), SetTrackFader(2, 1 - 0.99)]
    assert box.coalesced == 198


def test_buttons_in_a_fader_flood_all_arrive_in_order() -> None:
    box = Outbox()
    for i in range(9000):
        box.put(Feedback(f"fader{i % 9}", i, continuous=True))
        if i % 100 == 0:
            box.put(Feedback("button", i))
    out, _ = box.take(0.0)
    buttons = [m.value for m in out if isinstance(m, Feedback) and m.control == "button"]
    assert buttons == list(range(0, 9000, 100))
    faders = {m.control: m.value for m in out if isinstance(m, Feedback) and m.control != "button"}
    assert faders == {f"fader{k}": 8991 + k for k in range(9)}


def test_pacing_of_continuous_messages() -> None:
    box = Outbox(min_interval=0.1)
    box.put(Feedback("pos", 1.0, continuous=True))
    assert box.take(10.0)[0] == [Feedback("pos", 1.0, continuous=True)]
    box.put(Feedback("pos", 2.0, continuous=True))
    box.put(Feedback("led", True))
    out, wait = box.take(10.05)
    assert out == [Feedback("led", True)]  # discrete goes at once
    assert wait is not None and abs(wait - 0.05) < 1e-9
    box.put(Feedback("pos", 3.0, continuous=True))
    assert box.take(10.125)[0] == [Feedback("pos", 3.0, continuous=True)]


def test_log_entries_are_discrete_and_clear() -> None:
    box = Outbox()
    box.put(LogEntry(1, {"kind": "x"}))
    box.put(LogEntry(2, {"kind": "y"}))
    assert len(box) == 2
    box.clear()
    assert box.take(0.0) == ([], None)


def test_bypass_rules_keep_discrete_order_and_pacing() -> None:
    box = Outbox(min_interval=0.1)
    sent: list[Outbound] = []

    def send(message: Outbound) -> bool:
        sent.append(message)
        return True

    def direct(message: Outbound, now: float) -> bool:
        before = len(sent)
        ok = box.send_direct(message, now, send)
        assert ok == (len(sent) == before + 1)  # True exactly when it was handed to send
        return ok

    assert direct(Feedback("led", True), 0.0)
    box.put(Feedback("fader", 0.5, continuous=True))
    # a held continuous value does not hold back a discrete one
    assert direct(Feedback("led", False), 0.0)
    # but a continuous one waits for the held one (latest wins in the outbox)
    assert not direct(Feedback("fader", 0.6, continuous=True), 0.0)
    box.put(Feedback("led", True))
    # a queued discrete message blocks every bypass: order among discrete messages holds
    assert not direct(Feedback("other", True), 0.0)
    box.take(0.0)
    assert direct(Feedback("fader", 0.7, continuous=True), 1.0)
    assert not direct(Feedback("fader", 0.8, continuous=True), 1.05)  # paced
    assert direct(Feedback("fader", 0.8, continuous=True), 1.2)
    assert [m.value for m in sent if isinstance(m, Feedback)] == [True, False, 0.7, 0.8]


def test_a_direct_send_the_driver_refuses_keeps_the_pacing() -> None:
    box = Outbox(min_interval=0.1)
    assert not box.send_direct(Feedback("fader", 0.5, continuous=True), 1.0, lambda m: False)
    # not sent: the next continuous value is not held back by a pacing interval
    assert box.send_direct(Feedback("fader", 0.6, continuous=True), 1.01, lambda m: True)
