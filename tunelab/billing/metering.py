"""Metering a running job: each heartbeat, the compute used since the last one is charged, but
only the part that is new work.

A job's work position is -1 while it sets up, 0 once its data is ready, and s after training
step s. `job_billing.frontier_pos` is the furthest position any attempt has been billed to, and
`frontier_ms` the compute billed at that position (an evaluation after the last step, or a
strategy without steps). An attempt that resumes from a checkpoint behind the frontier (its
worker was killed, or it was paused for credit) redoes steps already paid for: that compute is
measured but not charged, until the attempt passes the frontier. Each charge records the
position range it covers, (step_from, step_to], and those ranges never overlap; charges carry
the sub-micro-dollar remainder, so the charges of a job add up to exactly its billed compute
times the price.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from . import ledger, prices

STOP_ALLOWANCE_S = 3.0     # compute a job may still use between "out of credit" and its checkpoint


@dataclass
class Cursor:
    """One attempt's place in the job's work (in memory, in the worker)."""
    pos: int = -1
    ms_at_pos: int = 0


@dataclass
class Split:
    billable_ms: int
    frontier_pos: int
    frontier_ms: int
    step_from: int
    step_to: int


def split(frontier_pos: int, frontier_ms: int, cursor: Cursor, new_pos: int, delta_ms: int) -> Split:
    """How much of `delta_ms`, spent while the attempt moved from cursor.pos to new_pos, is new
    work. Updates the cursor. Errs towards charging less, never twice."""
    pos0, new_pos = cursor.pos, max(new_pos, cursor.pos)
    if new_pos > pos0:
        if new_pos <= frontier_pos:                       # still catching up: all re-done work
            billable, start = 0, new_pos
        elif pos0 >= frontier_pos:                        # beyond the frontier: new work, less any
            redo = max(frontier_ms - cursor.ms_at_pos, 0) if pos0 == frontier_pos else 0
            billable, start = max(delta_ms - redo, 0), pos0   # compute still owed at the frontier
        else:                                             # crossed it: the steps past it are new
            billable = delta_ms * (new_pos - frontier_pos) // (new_pos - pos0)
            start = frontier_pos
        cursor.pos, cursor.ms_at_pos = new_pos, 0
        if new_pos > frontier_pos:
            frontier_pos, frontier_ms = new_pos, 0
        return Split(billable, frontier_pos, frontier_ms, start, new_pos)
    before, after = cursor.ms_at_pos, cursor.ms_at_pos + delta_ms
    cursor.ms_at_pos = after
    if pos0 < frontier_pos:
        return Split(0, frontier_pos, frontier_ms, pos0, pos0)
    if pos0 > frontier_pos:                               # (a frontier behind us: nothing billed here yet)
        frontier_pos, frontier_ms = pos0, 0
    billable = max(after - frontier_ms, 0) - max(before - frontier_ms, 0)
    return Split(billable, frontier_pos, max(frontier_ms, after), pos0, pos0)


@dataclass
class MeterResult:
    charged: int = 0            # micro-dollars charged by this reading
    billable_ms: int = 0
    exhausted: bool = False     # credit ran out: the job must checkpoint and pause
    reserved: int = 0           # what the job still holds


def margin(device: str, units: int, heartbeat_s: float) -> int:
    """Micro-dollars a job may burn before the next check and its checkpoint."""
    per_hour = prices.current().compute_per_hour(device) * (units if device == "cpu" else 1)
    return int(per_hour * (2 * heartbeat_s + STOP_ALLOWANCE_S) / 3600) + 1


def record(session: Session, tenant_id: str, job_id: str, cursor: Cursor, new_pos: int, delta_ms: int,
           wall_ms: int, *, device: str, units: int, heartbeat_s: float) -> MeterResult:
    """Post one meter reading: the charge for the new work in it, then keep the job's reservation
    ahead of its spending, drawing on the tenant's available credit; `exhausted` when it can't."""
    acct = ledger.lock_account(session, tenant_id)
    jb = ledger.job_billing(session, job_id)
    if jb is None or jb.state == "settled":
        return MeterResult()
    cut = split(jb.frontier_pos, jb.frontier_ms, cursor, new_pos, max(delta_ms, 0))
    jb.frontier_pos, jb.frontier_ms = cut.frontier_pos, cut.frontier_ms
    jb.metered_ms += max(delta_ms, 0)
    jb.billed_ms += cut.billable_ms
    jb.wall_ms += max(wall_ms, 0)
    jb.device = device
    sheet = prices.current()
    amount, jb.charge_remainder = prices.compute_charge(cut.billable_ms, sheet.compute_per_hour(device),
                                                       jb.charge_remainder)
    jb.meter_seq += 1
    # An entry's quantity is all the compute billed since the previous entry (readings worth less
    # than a micro-dollar post nothing; their compute rides on the next entry).
    quantity = jb.billed_ms - ledger.charged_quantity(session, job_id) if amount else 0
    ledger.charge(session, acct, jb, amount, quantity=quantity,
                  unit="cpu_ms" if device == "cpu" else "gpu_ms", step_from=cut.step_from, step_to=cut.step_to,
                  price_version=sheet.version, dedupe_key=f"meter:{job_id}:{jb.meter_seq}",
                  memo=f"{device} x{units}" + (f", {delta_ms - cut.billable_ms} ms re-done work not charged"
                                               if cut.billable_ms < delta_ms else ""))
    exhausted = False
    if jb.state == "open":
        need = margin(device, units, heartbeat_s)
        if jb.reserved < need:
            want = max(2 * need, jb.estimate_high // 4) - jb.reserved
            take = min(want, max(acct.available, 0))
            ledger.reserve(session, acct, jb, take, memo="reservation extended: the job outran its estimate")
        exhausted = jb.reserved < need
    session.flush()
    return MeterResult(amount, cut.billable_ms, exhausted, jb.reserved)
