"""Billing on the command line. Remote, with a tenant's key: `tunelab usage` (balance, reserved,
spent, per-job cost, daily usage). On the server's machine, as the operator: `tunelab admin
billing reconcile | balance | grant | adjust | quota | calibration | housekeeping`."""

from __future__ import annotations

import json
from datetime import timedelta

from .common import dump, open_database, remote, split_set
from .exits import EXIT_ERROR, EXIT_OK


def extend(sub, groups) -> None:
    """`jobs estimate` and `usage` (remote: after remote.extend), `admin billing ...` (operator: after
    admin.extend)."""
    p = _json(groups["jobs"].add_parser("estimate", help="what a job would cost and take, before starting it"))
    p.add_argument("dataset_id")
    p.add_argument("--strategy", help="default: the dataset's task's (lora, sft-lora, dpo)")
    p.add_argument("--model", help="default: the task's (minilm for labelled texts, smollm2 for conversations)")
    p.add_argument("--test-dataset", dest="test_dataset_id")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a hyperparameter")
    p.add_argument("--limit", type=int)
    p.set_defaults(func=cmd_jobs_estimate)
    p = sub.add_parser("usage", help="remote: your credit (available, reserved, spent), job costs, daily usage")
    p.add_argument("--days", type=int, default=7, help="daily usage for this many days (default 7)")
    p.add_argument("--jobs", type=int, default=10, help="the most recent jobs' costs (default 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_usage)

    billing = groups["admin"].add_parser("billing", help="credits, usage, quotas (operator)") \
        .add_subparsers(dest="billing_action", required=True)
    p = billing.add_parser("reconcile", help="prove every balance equals the sum of its ledger entries (exit 1 if not)")
    p.add_argument("--tenant", help="one tenant (id or name); default all")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reconcile)
    p = billing.add_parser("balance", help="a tenant's balance")
    p.add_argument("tenant")
    p.set_defaults(func=cmd_balance)
    for name, what in (("grant", "give a tenant credit (a grant, or a paid top-up); resumes its paused jobs"),
                       ("adjust", "correct a tenant's credit (negative removes)")):
        p = billing.add_parser(name, help=what)
        p.add_argument("tenant", help="tenant id or name")
        p.add_argument("--usd", required=True, help="dollars, e.g. 25 or 0.50" + (" or -3" if name == "adjust" else ""))
        p.add_argument("--memo", default="" if name == "grant" else None, required=name == "adjust")
        if name == "grant":
            p.add_argument("--kind", choices=["grant", "topup"], default="grant")
            p.add_argument("--reference", help="a payment or order id")
            p.add_argument("--expires-days", type=float, help="the grant lapses after this many days")
        p.set_defaults(func=cmd_grant if name == "grant" else cmd_adjust)
    p = billing.add_parser("quota", help="show or set a tenant's quotas")
    p.add_argument("tenant")
    for q in ("concurrent-jobs", "gpus", "storage-bytes", "dataset-bytes"):
        p.add_argument(f"--{q}", type=int)
    p.add_argument("--reset", action="append", default=[], help="put a quota back to the platform default")
    p.set_defaults(func=cmd_quota)
    p = billing.add_parser("calibration", help="the throughput calibration table; --set KEY=FACTOR to override")
    p.add_argument("--set", action="append", default=[], metavar="STRATEGY|MODEL|DEVICE=FACTOR")
    p.set_defaults(func=cmd_calibration)
    billing.add_parser("housekeeping", help="one pass: lapse grants, charge storage and serving, resume paused jobs") \
        .set_defaults(func=cmd_housekeeping)


# ---- remote ----------------------------------------------------------------------------------
def _json(p):
    p.add_argument("--json", action="store_true")
    return p


def _seconds(s) -> str:
    s = int(round(s or 0))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def estimate_line(b: dict) -> str:
    """One line for a job's billing block (the job object's `billing`)."""
    low, high = b.get("estimate_range_usd") or ["?", "?"]
    wl, wh = b.get("estimate_wall_seconds_range") or [None, None]
    return (f"estimate ${b.get('estimate_usd')} (range ${low}-${high}), ~{_seconds(b.get('estimate_wall_seconds'))} "
            f"({_seconds(wl)}-{_seconds(wh)}); reserved ${b.get('reserved_usd')}")


@remote
def cmd_jobs_estimate(client, args) -> int:
    e = client.jobs.estimate(args.dataset_id, strategy=args.strategy, model=args.model,
                             params=split_set(args.set, json_values=True),
                             test_dataset_id=args.test_dataset_id, limit=args.limit)
    if args.json:
        dump(e)
        return EXIT_OK
    lo, hi = e["wall_seconds_range"]
    print(f"cost  ${e['cost_usd']}  (range ${e['cost_range_usd'][0]}-${e['cost_range_usd'][1]}; "
          f"${e['reserve_usd']} is reserved when it starts)")
    print(f"time  ~{_seconds(e['wall_seconds'])}  ({_seconds(lo)}-{_seconds(hi)}) on {e['device']} "
          f"x{e['units']}; price sheet {e['price_version']}")
    if e["would_start"]:
        print(f"would start now: ${e['available_usd']} available")
    else:
        why = e["quota"]["message"] if e.get("quota") else f"${e['missing_usd']} more credit is needed"
        print(f"would NOT start now: {why}")
    return EXIT_OK


@remote
def cmd_usage(client, args) -> int:
    bal = client.billing.balance()
    jobs = client.billing.jobs(limit=args.jobs)
    days = client.billing.usage(days=args.days)
    if args.json:
        dump({"balance": bal, "jobs": jobs, "daily": days})
        return EXIT_OK
    print(f"available  ${bal['available_usd']}" + ("   (in debt: top up to resume work)" if bal["in_debt"] else ""))
    print(f"reserved   ${bal['reserved_usd']}   (held for queued and running jobs)")
    print(f"spent      ${bal['spent_usd']}")
    print(f"granted    ${bal['granted_usd']}   (price sheet {bal['price_version']})")
    if jobs:
        print("\njob                              state     estimate (range)                    actual       compute")
        for j in jobs:
            e = j["estimate"]
            print(f"{j['job_id']:<32} {j['state']:<9} ${e['cost_usd']} (${e['low_usd']}-${e['high_usd']})  "
                  f"${j['charged_usd']:<11} {j['compute_seconds']:>8.1f}s")
    spent = [d for d in days if d["total"]]
    if spent:
        print("\nday         compute      storage      serving      total")
        for d in spent:
            print(f"{d['date']}  ${d['compute_usd']}  ${d['storage_usd']}  ${d['serving_usd']}  ${d['total_usd']}")
    return EXIT_OK


# ---- operator --------------------------------------------------------------------------------
def _db():
    return open_database()[1]


def _tenant_id(session, ref: str) -> str:
    from sqlalchemy import select

    from ..db.models import Tenant

    tenant = session.get(Tenant, ref) or session.scalars(select(Tenant).where(Tenant.name == ref)).first()
    if tenant is None:
        raise SystemExit(f"error: no tenant {ref!r} (give its id or name)")
    return tenant.id


def cmd_reconcile(args) -> int:
    from ..billing.reconcile import reconcile

    with _db().session() as s:
        result = reconcile(s, [_tenant_id(s, args.tenant)] if args.tenant else None)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for t in result["tenants"]:
            print(f"{'ok  ' if t['ok'] else 'FAIL'} {t['tenant_id']}  {t.get('identity', '')}")
            for problem in t["problems"]:
                print(f"     - {problem}")
        print(f"{len(result['tenants'])} tenant(s): " + ("the books balance" if result["ok"] else "PROBLEMS FOUND"))
    return EXIT_OK if result["ok"] else EXIT_ERROR


def cmd_balance(args) -> int:
    from ..billing.reports import balance

    with _db().session() as s:
        print(json.dumps(balance(s, _tenant_id(s, args.tenant)), indent=2))
    return EXIT_OK


def _micro(text: str) -> int:
    from ..billing.money import to_micro

    try:
        return to_micro(text)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def cmd_grant(args) -> int:
    from ..db.models import utcnow
    from ..services.billing import grant

    amount = _micro(args.usd)
    if amount <= 0:
        raise SystemExit("error: a grant is a positive amount (use `adjust` to remove credit)")
    expires = utcnow() + timedelta(days=args.expires_days) if args.expires_days else None
    with _db().session() as s:
        done = grant(s, _tenant_id(s, args.tenant), amount, kind=args.kind, memo=args.memo, expires_at=expires,
                     reference=args.reference, created_by="cli")
    print(json.dumps(done))
    return EXIT_OK


def cmd_adjust(args) -> int:
    from ..billing.ledger import adjust
    from ..jobs.metering import resume_paused

    amount = _micro(args.usd)
    with _db().session() as s:         # a BillingError: exit 1, errors.guarded
        tenant_id = _tenant_id(s, args.tenant)
        entry = adjust(s, tenant_id, amount, memo=args.memo, created_by="cli")
        resumed = resume_paused(s, tenant_id) if amount > 0 else []
        print(json.dumps({"entry_id": entry.id if entry else None, "resumed_jobs": resumed}))
    return EXIT_OK


def cmd_quota(args) -> int:
    from ..billing import quotas

    changes = {q: getattr(args, q) for q in quotas.QUOTAS if getattr(args, q) is not None}
    changes |= {name.replace("-", "_"): None for name in args.reset}
    with _db().session() as s:
        tenant_id = _tenant_id(s, args.tenant)
        try:
            limits = quotas.set_limits(s, tenant_id, changes, by="cli") if changes else quotas.limits(s, tenant_id)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(json.dumps({"tenant_id": tenant_id, "limits": limits, "usage": quotas.usage(s, tenant_id)}))
    return EXIT_OK


def cmd_calibration(args) -> int:
    from sqlalchemy import select

    from ..db.ledger import Calibration
    from ..db.models import utcnow

    with _db().session() as s:
        for item in args.set:
            key, _, value = item.rpartition("=")
            if key.count("|") != 2:
                raise SystemExit(f"error: --set takes STRATEGY|MODEL|DEVICE=FACTOR, got {item!r}")
            row = s.get(Calibration, key) or Calibration(key=key, wall_factor=1.0, spread=0.2, samples=0)
            row.factor, row.updated_at = float(value), utcnow()
            s.add(row)
        s.flush()
        rows = s.scalars(select(Calibration).order_by(Calibration.key)).all()
        print(json.dumps([{"key": r.key, "factor": round(r.factor, 4), "wall_factor": round(r.wall_factor, 4),
                           "spread": round(r.spread, 4), "samples": r.samples} for r in rows], indent=2))
    return EXIT_OK


def cmd_housekeeping(args) -> int:
    from ..jobs.metering import housekeeping

    with _db().session() as s:
        print(json.dumps(housekeeping(s)))
    return EXIT_OK
