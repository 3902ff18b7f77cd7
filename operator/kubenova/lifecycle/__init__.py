"""The instance and migration state machines: phases, transition table, decide(). Pure.

Must not import kopf, kubernetes, libvirt or asyncio, nor read the clock (it takes `now`).
"""
