"""Validate the configuration and run the preflight checks on every host.

This runs before any operation of the deploy. On the first host it plans all
hosts at once, so a problem on any host stops the deploy before anything
changes anywhere.
"""

from pyinfra import host, inventory

from bestbox.plan import plan_for, prepare

prepare(inventory)
plan = plan_for(host)
