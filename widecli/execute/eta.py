"""The time a sweep has left, from the work it has left (execute.plan.work) and the rate at which
this machine has done work so far, measured without each group's first epoch.

A group's first epoch carries one-time costs: numba compiling the sparse kernels (seconds, once per
process), building the model and masks, loading data. A rate taken over it said 2 h 20 min for a
17-minute sweep. So the clock only runs while some group is past its first epoch (or between groups,
whose bookkeeping recurs), and only the work of epochs after the first counts towards the rate;
finished work of every kind still counts as done. Pure: times come in as arguments.
"""

from __future__ import annotations


class Eta:
    def __init__(self, total_work: float):
        self.total = float(total_work)   # work of the runs this sweep trains
        self.done = 0.0                  # credited so far (warm-up epochs included)
        self.measured_work = 0.0         # credited by epochs after a group's first
        self.measured_time = 0.0         # seconds while some group was past its first epoch
        self.warming: set = set()        # groups in their first epoch
        self.running: set = set()        # groups started and not finished
        self.last: float | None = None   # when the clock was last advanced

    def _advance(self, now: float) -> None:
        if self.last is not None and not (self.running and self.running <= self.warming):
            self.measured_time += max(0.0, now - self.last)   # not while every group is warming up
        self.last = now

    def start(self, group, now: float) -> None:
        self._advance(now)
        self.running.add(group)
        self.warming.add(group)

    def credit(self, group, amount: float, epoch: int, now: float) -> None:
        """`amount` of work done by `group`, reported at the end of its `epoch` (1-based)."""
        self._advance(now)
        self.done += amount
        if group in self.warming:
            self.warming.discard(group)   # its first epoch: done, but not a measure of the rate
        else:
            self.measured_work += amount

    def finish(self, group, rest: float, now: float) -> None:
        """The group ended (`rest`: its work not credited epoch by epoch, e.g. stopped early)."""
        self._advance(now)
        self.done += rest
        self.running.discard(group)
        self.warming.discard(group)

    @property
    def rate(self) -> float | None:
        """Work per second, once something has been measured."""
        if self.measured_work <= 0 or self.measured_time <= 0:
            return None
        return self.measured_work / self.measured_time

    def left(self) -> float | None:
        """Seconds left, or None before the first measurement."""
        rate = self.rate
        return None if rate is None else max(0.0, self.total - self.done) / rate
