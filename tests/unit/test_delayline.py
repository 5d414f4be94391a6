import pytest

from nodes.delayline import DelayLine


def test_items_leave_after_the_delay_in_order():
    line = DelayLine(0.010)
    line.push(1.000, "a")
    line.push(1.004, "b")
    assert line.due(1.009) == []
    assert line.next_due() == pytest.approx(1.010)
    assert line.due(1.010) == ["a"]
    assert line.due(1.0139) == []
    assert line.due(2.0) == ["b"]
    assert line.next_due() is None and len(line) == 0


def test_zero_delay_is_immediate():
    line = DelayLine(0.0)
    line.push(5.0, 1)
    line.push(5.0, 2)
    assert line.due(5.0) == [1, 2]


def test_negative_delay_is_refused():
    with pytest.raises(ValueError, match="negative"):
        DelayLine(-0.001)
