"""Starts the controllers of one node."""

from __future__ import annotations

import asyncio

from shoal.control.controller import Controller
from shoal.control.crd_establishing import CRDEstablishing
from shoal.control.garbage_collector import GarbageCollector
from shoal.control.namespace_lifecycle import NamespaceLifecycle
from shoal.store.objects import ObjectStore


def controllers(store: ObjectStore) -> list[Controller]:
    return [GarbageCollector(store), NamespaceLifecycle(store), CRDEstablishing(store)]


def start(store: ObjectStore) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(c.run(), name=c.name) for c in controllers(store)]
