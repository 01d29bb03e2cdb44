"""What a stage needs to know of the Ray cluster it runs on, from `ray.nodes()` (no Ray import here)."""
from __future__ import annotations


def spans_nodes(nodes: list[dict]) -> bool:
    """Whether work will run on more than one machine: several live nodes, or a head that offers no CPU (its
    workers come from an autoscaler)."""
    alive = [n for n in nodes if n.get("Alive")]
    return len(alive) > 1 or any(n.get("Resources", {}).get("CPU", 0) == 0 for n in alive)
