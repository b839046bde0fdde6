"""Alerts on a rider's live figures (issue 24, item 7): raised once per crossing, cleared on
recovery, each with the ride second it happened. Pure: the live tracker feeds it its snapshot
figures and sends what it returns as ``event: alert``.

Kinds:
- ``w_prime_low``: W′ balance under 25% of W′;
- ``hr_high``: heart rate over ``ALERT_HR_PCT`` (default 95) % of the profile's max HR;
- ``off_target``: the plan's state (``workouts.compliance``, with its hysteresis) has been
  ``under`` or ``over`` for more than 30 s in a row (``plan_state="finished"`` after the plan's
  last step clears it);
- ``stale``: the ride's state is ``stale`` (no entry for ``RIDE_STALE_AFTER``).

A figure that is unknown (no HR sensor, no plan, no W′) changes nothing: an alert raised stays
raised until the figure is known again and back in range.
"""

from __future__ import annotations

KINDS = ("w_prime_low", "hr_high", "off_target", "stale")
W_PRIME_LOW_SHARE = 0.25
OFF_TARGET_S = 30


class AlertWatch:
    def __init__(self, *, hr_pct: float = 95.0, off_target_s: float = OFF_TARGET_S) -> None:
        self.hr_share = hr_pct / 100
        self.off_target_s = off_target_s
        self.raised: dict[str, float] = {}  # kind -> the ride second it was raised
        self._off_since: float | None = None

    def update(
        self, ride_s: float, *, w_prime_balance: float | None = None, w_prime: float | None = None,
        heart_rate: float | None = None, max_hr: float | None = None, plan_state: str | None = None,
        stale: bool | None = None,
    ) -> list[dict]:
        """The alerts that change at ``ride_s``: ``[{"kind", "state": "raised" | "cleared", "ride_s"}]``."""
        if plan_state in ("under", "over"):
            if self._off_since is None:
                self._off_since = ride_s
        elif plan_state in ("on", "finished"):
            self._off_since = None
        conditions = {
            "w_prime_low": None if w_prime_balance is None or not w_prime else w_prime_balance < W_PRIME_LOW_SHARE * w_prime,
            "hr_high": None if heart_rate is None or not max_hr else heart_rate > self.hr_share * max_hr,
            "off_target": None if plan_state is None else (
                self._off_since is not None and ride_s - self._off_since > self.off_target_s),
            "stale": stale,
        }
        changes = []
        for kind in KINDS:
            now = conditions[kind]
            if now is None:
                continue
            if now and kind not in self.raised:
                self.raised[kind] = ride_s
                changes.append({"kind": kind, "state": "raised", "ride_s": round(ride_s)})
            elif not now and kind in self.raised:
                del self.raised[kind]
                changes.append({"kind": kind, "state": "cleared", "ride_s": round(ride_s)})
        return changes

    def active(self) -> list[str]:
        """The kinds raised now (the group view highlights their rows)."""
        return [kind for kind in KINDS if kind in self.raised]
