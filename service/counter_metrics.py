"""Tree nodes' counters (``sci/counters.py``) as Prometheus metric families.

One table of names, used by the frontend (every relay's figures from a tree status query)
and by a backend's optional local ``/metrics``, so a series means the same wherever it is read.
A counter name the table does not know (a newer node than this frontend) is not exported.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily

__all__ = ["COUNTER_METRICS", "counter_families"]

#: counter name (the part before any ``:``) -> (metric name without ``_total``, help, label of the part after ``:``)
COUNTER_METRICS: dict[str, tuple[str, str, str | None]] = {
    "commands_relayed": ("cloudland_tree_commands_relayed", "Commands a relay sent down to its children", None),
    "results_relayed": ("cloudland_tree_results_relayed", "Result frames a relay sent up", None),
    "commands_rerouted": ("cloudland_tree_commands_rerouted",
                          "Commands a relay sent again along a new route after one below it moved", None),
    "frames_dropped": ("cloudland_tree_frames_dropped", "Frames dropped, by reason", "reason"),
    "children_declared_dead": ("cloudland_tree_children_declared_dead",
                               "Children declared dead (missed heartbeats or connection gone)", None),
    "false_failures": ("cloudland_tree_false_failures",
                       "Children declared dead that came back as the same process: false alarms", None),
    "reparents": ("cloudland_tree_reparents", "Times a node attached to another parent after losing its own",
                  None),
    "reparent_seconds": ("cloudland_tree_reparent_seconds",
                         "Seconds nodes spent between losing a parent and attaching to another", None),
    "commands_run": ("cloudland_backend_commands_run", "Commands a backend's handlers ran", None),
    "commands_replayed": ("cloudland_backend_commands_replayed",
                          "Deliveries a backend answered from its journal instead of running again", None),
    "commands_refused": ("cloudland_backend_commands_refused",
                         "Commands refused before any handler ran, by reason", "reason"),
    "handler_errors": ("cloudland_backend_handler_errors", "Commands whose handler failed", None),
    "op_seconds": ("cloudland_backend_op_seconds", "Seconds spent in each op's handler", "op"),
    "op_count": ("cloudland_backend_ops", "Handler runs per op", "op"),
}


def counter_families(rows: Iterable[tuple[Sequence[str], dict[str, float]]],
                     labels: Sequence[str] = ()) -> list[CounterMetricFamily]:
    """Families for ``rows`` of (label values, counters table), each row labelled by ``labels``.

    Every family is there, and every plain counter has a sample per row (0 until it counts),
    so that dashboards and alerts find their series before the first event happens.
    """
    families = {name: CounterMetricFamily(metric, help_, labels=[*labels, extra] if extra else list(labels))
                for name, (metric, help_, extra) in COUNTER_METRICS.items()}
    for values, table in rows:
        for name, (_metric, _help, extra) in COUNTER_METRICS.items():
            if extra is None:
                families[name].add_metric(list(values), table.get(name, 0))
        for key, count in table.items():
            name, _, detail = key.partition(":")
            known = COUNTER_METRICS.get(name)
            if known is not None and known[2] is not None and detail:
                families[name].add_metric([*values, detail], count)
    return list(families.values())
