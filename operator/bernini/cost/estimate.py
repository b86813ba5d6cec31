"""The worker nodes' cost by the hour, from the capacity plan, the worker pods running now and a price table. Pure.

During an upgrade the pending cluster's workers are counted too, whatever their instance types: both clusters'
nodes are paid for. The Ray head runs on a shared CPU node and is not priced."""

from bernini.api.status import Cost, InstanceTypeCost
from bernini.cost.prices import PriceTable
from bernini.domain.capacity import Plan


def _dollars(counts: dict[str, int], prices: PriceTable) -> float:
    return round(sum(count * (prices.hourly(name) or 0.0) for name, count in counts.items()), 4)


def estimate(plan: Plan, running: dict[str, int], prices: PriceTable) -> Cost:
    """running: instance type -> worker pods now (none while suspended or before the RayService exists)."""
    minimum = {g.worker.instance.name: g.min_replicas for g in plan.groups}
    maximum = {g.worker.instance.name: g.max_replicas for g in plan.groups}
    current = {**dict.fromkeys(minimum, 0), **running}
    return Cost(
        current_dollars_per_hour=_dollars(current, prices),
        min_dollars_per_hour=_dollars(minimum, prices),
        max_dollars_per_hour=_dollars(maximum, prices),
        workers=sum(current.values()),
        instance_types=[InstanceTypeCost(instance_type=name, workers=count,
                                         dollars_per_hour=_dollars({name: count}, prices))
                        for name, count in current.items()],
        unpriced_instance_types=sorted(name for name in {**minimum, **running} if prices.hourly(name) is None),
        price_source=prices.source,
        prices_as_of=prices.as_of,
    )
