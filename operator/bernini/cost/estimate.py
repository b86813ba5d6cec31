"""The worker nodes' cost by the hour, from the capacity plan, the worker count KubeRay reports and a price
table. Pure.

KubeRay reports one worker count per RayCluster, not per group: with groups of different prices, the workers
above the groups' minima are priced at the dearest group's price, so the current figure is an upper bound.
During an upgrade the pending cluster's workers are counted too: both clusters' nodes are paid for.
The Ray head runs on a shared CPU node and is not priced."""

from bernini.api.status import Cost, InstanceTypeCost
from bernini.cost.prices import PriceTable
from bernini.domain.capacity import Plan


def _dollars(counts: dict[str, int], prices: PriceTable) -> float:
    return round(sum(count * (prices.hourly(name) or 0.0) for name, count in counts.items()), 4)


def estimate(plan: Plan, workers: int, prices: PriceTable) -> Cost:
    """`workers`: how many worker nodes run now (0 when suspended or before the RayService exists)."""
    minimum = {g.worker.instance.name: g.min_replicas for g in plan.groups}
    maximum = {g.worker.instance.name: g.max_replicas for g in plan.groups}
    current = dict.fromkeys(minimum, 0) if workers == 0 else dict(minimum)
    extra = max(0, workers - plan.min_workers)
    if extra:
        dearest = max(minimum, key=lambda name: prices.hourly(name) or 0.0)
        current[dearest] += extra
    return Cost(
        current_dollars_per_hour=_dollars(current, prices),
        min_dollars_per_hour=_dollars(minimum, prices),
        max_dollars_per_hour=_dollars(maximum, prices),
        workers=sum(current.values()),
        instance_types=[InstanceTypeCost(instance_type=name, workers=count,
                                         dollars_per_hour=_dollars({name: count}, prices))
                        for name, count in current.items()],
        unpriced_instance_types=sorted(name for name in minimum if prices.hourly(name) is None),
        price_source=prices.source,
        prices_as_of=prices.as_of,
    )
