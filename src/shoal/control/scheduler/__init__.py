"""The scheduler's pure part: the framework and its plugins.

This package owns the decision of which node a pod should run on, as pure
functions over plain dicts (Kubernetes objects as parsed JSON): a
:class:`Snapshot` of nodes and bound pods goes in, a :class:`ScheduleResult`
comes out, with the chosen node or the message Kubernetes would put in the
PodScheduled=False condition and the FailedScheduling event. It reads no
clock, draws no random numbers and does no I/O, so the API server's
scheduler loop and the deterministic simulator run the same code, and two
peers that see the same nodes choose the same node for the same pod.

Watching pods, retrying unschedulable ones and writing bindings, conditions
and events are the caller's job.
"""

from shoal.control.scheduler.framework import (
    MAX_NODE_SCORE,
    NO_NODES_MESSAGE,
    CycleState,
    FilterPlugin,
    NormalizeScorePlugin,
    Plugin,
    PluginFactory,
    PreFilterPlugin,
    PreScorePlugin,
    Profile,
    Registry,
    ScheduleResult,
    ScorePlugin,
    fit_error_message,
    schedule,
    tie_break_key,
)
from shoal.control.scheduler.plugins import default_profile, default_registry
from shoal.control.scheduler.pod_info import PodInfo
from shoal.control.scheduler.snapshot import NodeInfo, Snapshot
from shoal.control.scheduler.status import Code, Status

__all__ = [
    "MAX_NODE_SCORE",
    "NO_NODES_MESSAGE",
    "Code",
    "CycleState",
    "FilterPlugin",
    "NodeInfo",
    "NormalizeScorePlugin",
    "Plugin",
    "PluginFactory",
    "PodInfo",
    "PreFilterPlugin",
    "PreScorePlugin",
    "Profile",
    "Registry",
    "ScheduleResult",
    "ScorePlugin",
    "Snapshot",
    "Status",
    "default_profile",
    "default_registry",
    "fit_error_message",
    "schedule",
    "tie_break_key",
]
