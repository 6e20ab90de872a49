"""The time a sweep has left (execute.eta): work left over the rate measured without each group's
first epoch (issue 28: the first epoch's numba compilation made a 17-minute sweep read 2 h 20 min),
parallel groups counted once, finished work counted as done."""

from __future__ import annotations

import pytest

from widecli.execute.eta import Eta


def test_the_first_epoch_of_a_group_does_not_set_the_rate():
    eta = Eta(total_work=1000.0)   # 10 groups of 100 work, 10 epochs each, 1 s per epoch
    eta.start("g1", now=0.0)
    eta.credit("g1", 10.0, epoch=1, now=60.0)   # a first epoch slowed by 59 s of compilation
    assert eta.left() is None                   # nothing measured yet
    for epoch in range(2, 11):
        eta.credit("g1", 10.0, epoch=epoch, now=60.0 + epoch - 1)
    eta.finish("g1", 0.0, now=69.0)
    assert eta.left() == pytest.approx(90.0)    # 900 work left at 10 per second
    eta.start("g2", now=69.5)                   # half a second between groups counts (it recurs)
    eta.credit("g2", 10.0, epoch=1, now=70.5)
    assert eta.left() == pytest.approx(890.0 / (90.0 / 9.5))


def test_parallel_groups_share_the_clock():
    eta = Eta(total_work=400.0)
    eta.start("a", now=0.0)
    eta.start("b", now=0.0)
    eta.credit("a", 10.0, epoch=1, now=5.0)   # b still warming up: the clock runs for a
    eta.credit("b", 10.0, epoch=1, now=5.0)
    for t in range(1, 5):
        eta.credit("a", 10.0, epoch=1 + t, now=5.0 + t)
        eta.credit("b", 10.0, epoch=1 + t, now=5.0 + t)
    assert eta.rate == pytest.approx(20.0)    # two groups at 10 per second each
    assert eta.left() == pytest.approx((400 - 100) / 20.0)


def test_work_done_elsewhere_counts_as_done():
    eta = Eta(total_work=200.0)
    eta.start("a", now=0.0)
    eta.credit("a", 10.0, epoch=1, now=1.0)
    eta.credit("a", 10.0, epoch=2, now=2.0)
    eta.finish(("elsewhere", "r"), 100.0, now=2.0)   # a run another sweep finished
    assert eta.left() == pytest.approx((200 - 120) / 10.0)
